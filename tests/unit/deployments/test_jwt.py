"""Bearer JWTs from an identity system, on the in-process API: signatures by an
HS256 secret and by RS256/ES256 keys from a JWKS file, issuer, audience and expiry
checked, the role taken from a configurable claim, the static tokens unchanged."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.jwtkit import AUDIENCE, ISSUER, SECRET, bearer, write_jwks

API = "/api/v1/serve-ml"
ADMIN_TOKEN = "static-admin-token-0001"


@pytest.fixture(scope="module")
def jwks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jwks(tmp_path_factory.mktemp("idp") / "jwks.json")


def _client(root: Path, jwks_file: Path, **over: Any) -> TestClient:
    settings = Settings(root=root, admin_token=ADMIN_TOKEN, jwt_secret=SECRET, jwt_jwks_file=jwks_file,
                        jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **over)
    core = LocalCore(ScoringService(root, enable_xgb=False, metrics=NoMetrics()), max_bulk_rows=10,
                     guard=TokenGuard.of(settings))
    return TestClient(create_api(core, max_request_bytes=1 << 20))


_token = bearer


READING = {"equipment_id": "pump-03", "power": "5.5kW", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "rsa-1"), ("ES256", "ec-1"), ("HS256", None)])
def test_each_signature_kind_carries_its_role(demo_root: Path, jwks_file: Path, alg: str, kid: str | None) -> None:
    c = _client(demo_root, jwks_file)
    assert c.get(f"{API}/whoami", headers=_token("operator", alg=alg, kid=kid)).json()["role"] == "operator"
    assert c.post(f"{API}/predict", json=READING, headers=_token("viewer", alg=alg, kid=kid)).status_code == 200


def test_roles_gate_what_a_token_may_do(demo_root: Path, jwks_file: Path) -> None:
    c = _client(demo_root, jwks_file)
    assert c.post(f"{API}/predict", json=READING).status_code == 401  # reads need a bearer once JWTs are on
    viewer = c.post(f"{API}/sync", headers=_token("viewer"))
    assert viewer.status_code == 403 and "admin role" in viewer.json()["message"]
    assert c.put(f"{API}/thresholds", json={}, headers=_token("viewer")).status_code == 403
    assert c.post(f"{API}/sync", headers=_token("admin")).status_code == 200
    assert c.post(f"{API}/sync", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    # a list claim (the strongest role counts), nested under a dotted path
    nested = _client(demo_root, jwks_file, jwt_role_claim="realm_access.roles")
    token = _token(None, claim="unused", realm_access={"roles": ["offline_access", "viewer", "admin"]})
    assert nested.get(f"{API}/whoami", headers=token).json()["role"] == "admin"


@pytest.mark.parametrize(("token", "status", "says"), [
    (lambda: _token(exp_s=-120), 401, "expired"),
    (lambda: _token(aud="another-service"), 401, "Audience"),
    (lambda: _token(iss="https://evil.example"), 401, "issuer"),
    (lambda: _token(kid="rsa-2"), 401, "kid 'rsa-2'"),
    (lambda: _token("superuser"), 403, "names no role"),
    (lambda: {"Authorization": "Bearer " + jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, None,
                                                     algorithm="none")}, 401, "algorithm 'none'"),
    (lambda: {"Authorization": "Bearer " + jwt.encode({"role": "admin", "iss": ISSUER, "aud": AUDIENCE},
                                                     SECRET, algorithm="HS256")}, 401, "exp"),
])
def test_an_untrusted_token_is_refused_saying_why(demo_root: Path, jwks_file: Path, token: Any, status: int,
                                                  says: str) -> None:
    r = _client(demo_root, jwks_file).post(f"{API}/predict", json=READING, headers=token())
    assert r.status_code == status and says in r.json()["message"], r.json()


def test_a_token_signed_by_another_key_is_refused(demo_root: Path, jwks_file: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "role": "admin"}
    forged = jwt.encode(body, other, algorithm="RS256", headers={"kid": "rsa-1"})
    r = _client(demo_root, jwks_file).post(f"{API}/sync", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "Signature verification failed" in r.json()["message"]


def test_settings_refuse_a_short_secret_and_a_file_that_is_not_a_key_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 characters"):
        Settings(jwt_secret="too-short")
    bad = tmp_path / "jwks.json"
    bad.write_text('{"not": "keys"}')
    with pytest.raises(ValueError, match="no 'keys' list"):
        TokenGuard.of(Settings(jwt_jwks_file=bad))
