"""A tiny identity provider for the tests: RS256 and ES256 keys published as a JWKS
file, an HS256 secret, and bearer headers carrying a role (real PyJWT signatures)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "s" * 40
ISSUER, AUDIENCE = "https://idp.factory.example", "serve-ml"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def write_jwks(path: Path) -> Path:
    """The public keys ``rsa-1`` (RS256) and ``ec-1`` (ES256) as a JWKS document."""
    keys = []
    for kid, key, alg in (("rsa-1", RSA_KEY, "RS256"), ("ec-1", EC_KEY, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
    path.write_text(json.dumps({"keys": keys}))
    return path


def bearer(role: Any = "viewer", *, alg: str = "RS256", kid: str | None = "rsa-1", exp_s: float = 300,
           claim: str = "role", sub: str = "ana@factory", **claims: Any) -> dict[str, str]:
    """An ``Authorization`` header with a token the provider signed."""
    key = {"RS256": RSA_KEY, "ES256": EC_KEY, "HS256": SECRET}[alg]
    body = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time() + exp_s), claim: role, **claims}
    headers = {"kid": kid} if kid else None
    return {"Authorization": f"Bearer {jwt.encode(body, key, algorithm=alg, headers=headers)}"}
