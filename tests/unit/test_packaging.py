"""The image and compose deliverables, checked statically (Docker does not run on
these machines): the Dockerfile installs the way `make install` does, runs as a
user without privileges and keeps torch on its CPU build; compose.yaml parses, names
pinned images and files that exist, and wires serve-ml to its services."""

from __future__ import annotations

import re
import shlex

import yaml

from serve_ml.core.settings import REPO_ROOT, Settings

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _pip_installs(lines: list[str]) -> list[list[str]]:
    """Each `pip install` as its arguments, normalised: no interpreter path, no index
    URL (the image fetches torch's CPU wheel from its own index; here it is on disk),
    and the checkout's editable test install read as the plain package install."""
    out = []
    for line in lines:
        if "pip" not in line:
            continue
        words = shlex.split(line.replace("$(BIN)/", ""))
        if "pip" not in words or "install" not in words:
            continue
        words = words[words.index("pip"):]
        while "--extra-index-url" in words:
            i = words.index("--extra-index-url")
            del words[i:i + 2]
        out.append(["." if w == ".[test]" else w for w in words if w != "-e"])
    return out


def test_the_image_installs_as_make_install_does() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): pyproject.toml\n", 1)[1].split("\n\n", 1)[0]
    make_steps = _pip_installs([ln.strip() for ln in recipe.splitlines() if not ln.strip().startswith("#")])
    run_lines = [m.group(1) for m in re.finditer(r"^RUN (.+)$", DOCKERFILE, re.M)]
    docker_steps = _pip_installs(run_lines)
    assert make_steps == docker_steps, (make_steps, docker_steps)
    assert ["pip", "install", "--quiet", "torch==2.13.0"] in docker_steps  # pinned, before everything else
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE


def test_the_image_is_multi_stage_and_runs_without_privileges() -> None:
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", DOCKERFILE, re.M)
    assert len(stages) == 2 and stages[0][1] == "build"
    assert "COPY --from=build /opt/serve-ml /opt/serve-ml" in DOCKERFILE
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user == ["serve-ml"] and DOCKERFILE.index("USER serve-ml") > DOCKERFILE.index("COPY --from=build")
    env = dict(re.findall(r"(SERVE_ML_[A-Z_]+)=(\S+)", DOCKERFILE))
    for key in env:
        assert key.removeprefix("SERVE_ML_").lower() in Settings.model_fields, key
    assert env["SERVE_ML_HTTP_HOST"] == "0.0.0.0"  # reachable from outside the container


def test_compose_names_pinned_images_and_files_that_exist() -> None:
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"serve-ml", "postgres", "kafka", "mosquitto", "prometheus", "grafana"}
    assert services["serve-ml"]["build"] == "." and (REPO_ROOT / "Dockerfile").is_file()
    for name, svc in services.items():
        image = svc["image"]
        assert re.fullmatch(r"[a-z0-9./_-]+:v?[0-9][\w.-]*", image), (name, image)  # a pinned version, never latest
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    assert services["postgres"]["image"].startswith("timescale/timescaledb:")
    env = services["serve-ml"]["environment"]
    assert "@postgres:5432/" in env["DATABASE_URL"] and env["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["SERVE_ML_MQTT_URL"] == "mqtt://mosquitto:1883"
    for key in env:
        assert key in ("DATABASE_URL", "KAFKA_BOOTSTRAP") or \
            key.removeprefix("SERVE_ML_").lower() in Settings.model_fields, key
    prometheus = yaml.safe_load((REPO_ROOT / "cluster/compose/prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["serve-ml:8080"]
