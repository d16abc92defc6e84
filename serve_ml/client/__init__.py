"""A Python client for serve-ml: blocking (:class:`Client`) and asyncio
(:class:`AsyncClient`), the same calls in both.

    from serve_ml.client import Client

    with Client("http://127.0.0.1:8000", token="<read token>") as c:
        c.predict("press-02", {"air_temp_k": 300.2, "process_temp_k": 310.1, "speed_rpm": 1500,
                               "torque_nm": 41, "tool_wear_min": 30})
        c.predict_columns("press-02", frame)        # numpy arrays or a pandas DataFrame
        for message in c.subscribe("press-02"):     # live verdicts, status and alarms
            ...

A refused request raises :class:`ApiError` with the server's status, error type and
message. 503 and 429 with ``Retry-After`` (the server did nothing) are retried after
the time it asks, within :class:`RetryPolicy`; so is a dropped connection on a call
that is safe to repeat (scoring, reads, acknowledging).
"""

from serve_ml.client.aio import AsyncClient
from serve_ml.client.calls import ApiError, RetryPolicy
from serve_ml.client.sync import Client

__all__ = ["ApiError", "AsyncClient", "Client", "RetryPolicy"]
