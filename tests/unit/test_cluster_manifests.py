"""cluster/ deliverables parse and agree with serve_config.yaml."""

from __future__ import annotations

import yaml

from serve_ml.core.settings import REPO_ROOT
from tests.dashboard import dashboard_metrics

CLUSTER = REPO_ROOT / "cluster"
FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def test_rayservice_embeds_serve_config() -> None:
    rs = yaml.safe_load((CLUSTER / "rayservice.yaml").read_text())
    assert rs["kind"] == "RayService"
    embedded = yaml.safe_load(rs["spec"]["serveConfigV2"])
    local = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    # the one intended difference: inside a pod Serve binds all interfaces
    assert embedded["http_options"].pop("host") == "0.0.0.0" and local["http_options"].pop("host") == "127.0.0.1"
    assert embedded == local
    cluster = rs["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    containers = [p["containers"][0] for p in pods]
    for pod in pods:
        # uploads are staged inside the bundle root and renamed into place: it must be writable
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/bundles")
        assert not mount.get("readOnly", False)
        claim = next(v for v in pod["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]["claimName"]
        pvc = yaml.safe_load((CLUSTER / "bundles-pvc.yaml").read_text())
        assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for c in containers:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert all(env.get(k) == v for k, v in FLAGS.items()), c["name"]
        assert "SERVE_ML_ADMIN_TOKEN" in env  # from a secret, never inline
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] is None  # the token from a Secret
        secret = next(e for e in c["env"] if e["name"] == "RAY_AUTH_TOKEN")
        assert secret["valueFrom"]["secretKeyRef"]["name"] == "serve-ml-ray-auth"


def test_cluster_launcher_sets_flags_where_ray_starts() -> None:
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cfg[key])
        assert all(f"{k}={v}" in start for k, v in FLAGS.items()), key
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start, key
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])


def test_prometheus_scrapes_the_metrics_port() -> None:
    cfg = yaml.safe_load((CLUSTER / "prometheus.yml").read_text())
    targets = [t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "127.0.0.1:8080" in targets


def test_dashboard_covers_what_sres_asked_for() -> None:
    names = dashboard_metrics()
    for needed in ("ray_serve_ml_rows_scored_total", "ray_serve_ml_request_duration_seconds_bucket",
                   "ray_serve_ml_anomalies_total", "ray_serve_ml_live_version_info",
                   "ray_serve_deployment_replica_healthy", "ray_serve_deployment_queued_queries",
                   "ray_serve_ml_swaps_total", "ray_serve_ml_stream_lag", "ray_serve_ml_stream_consumed_total",
                   "ray_serve_ml_stream_stored_total", "ray_serve_ml_stream_dead_lettered_total",
                   "ray_serve_ml_stream_duplicates_total", "ray_serve_ml_stream_batch_write_seconds_bucket",
                   "ray_serve_ml_stream_alerts_total", "ray_serve_ml_stream_anomalies_total",
                   "ray_serve_ml_mqtt_forwarded_total", "ray_serve_ml_mqtt_failed_total"):
        assert needed in names, needed
