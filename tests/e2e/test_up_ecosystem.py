"""The ecosystem's clients against a `make up` system (``serve-ml up``, HAProxy,
embedded PostgreSQL and Kafka): bearer JWTs from an identity provider's JWKS with
their roles and the audit trail, the real ``tritonclient`` over OIP v2, a
librdkafka producer (``confluent-kafka``) feeding the stream, and schemathesis with
every check through the Serve ingress; and one trace across ingress -> equipment
replica -> response, exported over OTLP. Starts its own cluster (marker ``own_cluster``)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from confluent_kafka import Producer

from tests.e2e.conftest import cli_env, start_up, stop_up
from tests.fuzzkit import schemathesis_run, unexplained_failures
from tests.jwtkit import AUDIENCE, ISSUER, bearer, write_jwks
from tests.otlpkit import Receiver, start_receiver
from tests.samples import sim_rows

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


CLIENT_TRACE, CLIENT_SPAN = "5c0ffee0ddba11ad5c0ffee0ddba11ad", "1234567890abcdef"


def test_jwks_tritonclient_confluent_kafka_and_schemathesis_against_up(tmp_path: Path) -> None:
    otlp, receiver = start_receiver()
    env = {**cli_env(tmp_path), "SERVE_ML_JWT_JWKS_FILE": str(write_jwks(tmp_path / "jwks.json")),
           "SERVE_ML_JWT_ISSUER": ISSUER, "SERVE_ML_JWT_AUDIENCE": AUDIENCE, "SERVE_ML_OTLP_ENDPOINT": otlp}
    log = tmp_path / "up.log"
    proc = start_up(env, log)
    try:
        port = env["SERVE_ML_HTTP_PORT"]
        api = f"http://127.0.0.1:{port}/api/v1/serve-ml"
        banner = log.read_text()
        bootstrap = re.search(r"^\s*kafka\s+(\S+)", banner, re.M)
        topic = re.search(r"^\s*topics\s+readings (\S+),", banner, re.M)
        assert bootstrap and topic, banner[-2000:]
        viewer, admin = bearer("viewer", sub="vic@factory"), bearer("admin", alg="ES256", kid="ec-1", sub="ada@factory")
        http = httpx.Client(base_url=api, timeout=60)

        # Roles from the identity provider's tokens, and who did what in the audit trail.
        assert http.get("/equipment", headers=viewer).status_code == 200
        refused = http.post("/sync", headers=viewer)
        assert refused.status_code == 403, refused.text
        assert http.post("/sync", headers=admin).status_code == 200
        # an audit row is written after its answer went out (edge._audit): wait for it, briefly
        want, seen, deadline = {("jwt:vic@factory", 403), ("jwt:ada@factory", 200)}, set(), time.monotonic() + 15
        while not want <= seen and time.monotonic() < deadline:
            seen = {(e["subject"], e["status"]) for e in http.get(
                "/audit", headers=admin, params={"path_prefix": "/api/v1/serve-ml/sync"}).json()["entries"]}
            time.sleep(0.3)
        assert want <= seen, seen
        assert http.get("/audit", headers=viewer).status_code == 403

        # tritonclient, JSON and binary tensors, with the viewer's token.
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=60.0)
        try:
            assert client.is_server_live() and client.is_model_ready("press-02", headers=dict(viewer))
            # one [n, features] tensor, named by no feature: read in the metadata's input order
            order = [i["name"] for i in client.get_model_metadata("press-02", headers=dict(viewer))["inputs"]]
            rows = sim_rows("normal", 40, "7.5kW") + sim_rows("overstrain", 40, "7.5kW")
            matrix = np.asarray([[r[f] for f in order] for r in rows])
            own = http.post("/predict/columns", headers=viewer, json={
                "equipment_id": "press-02", "power": "7.5kW",
                "columns": {f: matrix[:, j].tolist() for j, f in enumerate(order)}}).json()
            for binary in (False, True):
                tensor = triton.InferInput("readings", list(matrix.shape), "FP64")
                tensor.set_data_from_numpy(matrix, binary_data=binary)
                res = client.infer("press-02", [tensor], headers=dict(viewer), parameters={"power": "7.5kW"},
                                   outputs=[triton.InferRequestedOutput("score", binary_data=binary)])
                np.testing.assert_allclose(res.as_numpy("score"), own["score"])
        finally:
            client.close()

        # confluent-kafka (librdkafka) feeding the stream: every reading stored once.
        t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=40, microseconds=secrets.randbelow(10**6))
        produced = sim_rows("normal", 50, "7.5kW", seed=23)
        times = [t0 + dt.timedelta(milliseconds=10 * i, microseconds=3) for i in range(len(produced))]
        producer = Producer({"bootstrap.servers": bootstrap.group(1), "acks": "all", "linger.ms": 5})
        for ts, features in zip(times, produced, strict=True):
            producer.produce(topic.group(1), key=b"press-02", value=orjson.dumps(
                {"equipment_id": "press-02", "ts": ts.isoformat(), "power": "7.5kW", "features": features}))
        assert producer.flush(60) == 0
        window = {"start": t0.isoformat(), "end": (t0 + dt.timedelta(seconds=2)).isoformat(), "limit": 1000}
        deadline, stored = time.monotonic() + 90, []
        while time.monotonic() < deadline and len(stored) < len(times):
            stored = http.get("/equipment/press-02/readings", headers=viewer, params=window).json()["readings"]
            time.sleep(1)
        assert len(stored) == len(times), (len(stored), log.read_text()[-2000:])

        # One trace from the caller through the ingress to the equipment replica: a
        # columnar request above columns_fast_path_max_rows is scored there.
        rows = sim_rows("normal", 5000, "7.5kW", seed=29)
        cols = {f: [r[f] for r in rows] for f in rows[0]}
        traced = http.post("/predict/columns", json={"equipment_id": "press-02", "power": "7.5kW", "columns": cols},
                           headers={**viewer, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert traced.status_code == 200, traced.text
        assert traced.headers["traceparent"].split("-")[1] == CLIENT_TRACE
        deadline, names = time.monotonic() + 60, {}
        while time.monotonic() < deadline and len(names) < 2:
            names = {s.name: svc for svc, s in Receiver.spans if s.trace_id.hex() == CLIENT_TRACE
                     and s.name in ("POST /api/v1/serve-ml/predict/columns", "equipment.score_columns")}
            time.sleep(1)
        assert names == {"POST /api/v1/serve-ml/predict/columns": "serve-ml-ingress",
                         "equipment.score_columns": "serve-ml-equipment"}, \
            sorted({(svc, s.name, s.trace_id.hex()[:8]) for svc, s in Receiver.spans})[:40]

        # schemathesis with every check, through HAProxy and the Serve ingress.
        report = schemathesis_run(f"http://127.0.0.1:{port}", env["SERVE_ML_ADMIN_TOKEN"], tmp_path, examples=5)
        unexplained = unexplained_failures(report)
        assert not unexplained, (sorted(unexplained), report[-6000:])
        assert http.get("/health/live").status_code == 200
    finally:
        stop_up(env, proc)
        receiver.shutdown()
        receiver.server_close()
