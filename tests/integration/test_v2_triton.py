"""Open Inference Protocol v2 through Ray Serve, driven by the real
``tritonclient.http`` client: health, metadata, JSON and binary inference, and the
client's own error for a bad request."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import ADMIN
from tests.samples import sim_rows

pytestmark = pytest.mark.integration
# tritonclient writes into the headers dict it is given (Inference-Header-Content-Length):
# every call gets a copy of the shared ADMIN headers.


@pytest.fixture()
def client(cluster) -> triton.InferenceServerClient:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{cluster.http_port}", network_timeout=60.0)
    yield c
    c.close()


def test_tritonclient_scores_json_and_binary_like_the_columns_route(client: triton.InferenceServerClient,
                                                                     http: httpx.Client) -> None:
    assert client.is_server_live() and client.is_server_ready(headers=dict(ADMIN))
    assert client.is_model_ready("press-02", headers=dict(ADMIN))
    meta = client.get_model_metadata("press-02", headers=dict(ADMIN))
    order = [i["name"] for i in meta["inputs"]]
    rows = sim_rows("normal", 50, "7.5kW") + sim_rows("overstrain", 50, "7.5kW")
    own = http.post("/predict/columns", json={
        "equipment_id": "press-02", "columns": {f: [r[f] for r in rows] for f in order}}).json()
    for binary in (False, True):
        inputs = []
        for f in order:
            t = triton.InferInput(f, [len(rows)], "FP64")
            t.set_data_from_numpy(np.asarray([r[f] for r in rows]), binary_data=binary)
            inputs.append(t)
        # every output the metadata promises (fault outputs only where classifiers run)
        outputs = [triton.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
        res = client.infer("press-02", inputs, outputs=outputs, headers=dict(ADMIN))
        assert "score" in own, own
        np.testing.assert_allclose(res.as_numpy("score"), own["score"])
        assert res.as_numpy("anomaly").tolist() == own["anomaly"]
        for name, m in own["modalities"].items():
            np.testing.assert_allclose(res.as_numpy(f"error_{name}"), m["error"])
        if own["classifier"]["status"] == "ran":
            labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("fault_label").tolist()]
            assert labels == own["classifier"]["label"]
        else:
            assert "fault_label" not in {o["name"] for o in meta["outputs"]}
        assert sum(res.as_numpy("anomaly")[50:]) > 25, "overstrained rows should be flagged"


def test_tritonclient_sees_the_protocol_error(client: triton.InferenceServerClient) -> None:
    t = triton.InferInput("air_temp_k", [1], "FP64")
    t.set_data_from_numpy(np.asarray([300.0]))
    with pytest.raises(InferenceServerException, match="power"):
        client.infer("press-02", [t], headers=dict(ADMIN))
    with pytest.raises(InferenceServerException, match="ghost-07"):
        client.get_model_metadata("ghost-07", headers=dict(ADMIN))
