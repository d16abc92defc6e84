"""Bearer-token checks for the HTTP API, by role: ``admin`` (bundles, sync),
``operator`` (equipment, thresholds, alarm acknowledgement; an admin may act as
operator), ``viewer`` (predict and reads).

A bearer is a static token (``SERVE_ML_ADMIN_TOKEN``, ``_OPERATOR_TOKEN``,
``_READ_TOKEN``, each mapped to its role) or, when an identity system is
configured (``SERVE_ML_JWT_SECRET`` and/or ``SERVE_ML_JWT_JWKS_FILE``), a JWT whose
signature, expiry, issuer and audience are checked and whose role claim names the
role.

Management endpoints need an admin; with neither an admin token nor a JWT
configured they are refused outright, and so are operator endpoints. Predict and
read endpoints are open only when neither a read token nor a JWT is configured.
Static tokens are compared in constant time; tokens never reach logs, errors or
metric labels.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_ml.core.errors import Forbidden, Unauthenticated
from serve_ml.core.settings import Settings

ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}
JWT_ALGORITHMS = frozenset({"HS256", "RS256", "ES256"})


@dataclass(frozen=True)
class Principal:
    """Who presented the bearer: a role, and a subject for the audit trail (the JWT's
    ``sub``, or ``token:<role>`` for a static token)."""

    role: str
    subject: str


class JwtVerifier:
    """Checks a bearer JWT and reads its role. HS256 with a shared secret; RS256 and
    ES256 with the public keys of a JWKS file, chosen by ``kid`` (or the only key of
    the algorithm's type when the token names none)."""

    def __init__(self, *, secret: str | None, jwks: dict[str, Any] | None, issuer: str | None,
                 audience: str | None, role_claim: str, leeway_s: float) -> None:
        import jwt

        self._secret = secret
        self._keys: list[tuple[str | None, str, Any]] = []  # kid, kty, key
        for jwk in (jwks or {}).get("keys", []):
            if jwk.get("use", "sig") != "sig" or jwk.get("kty") not in ("RSA", "EC"):
                continue
            self._keys.append((jwk.get("kid"), jwk["kty"], jwt.PyJWK(jwk).key))
        self.issuer, self.audience = issuer, audience
        self.role_claim, self.leeway_s = role_claim.split("."), leeway_s

    @classmethod
    def of(cls, settings: Settings) -> JwtVerifier | None:
        if settings.jwt_secret is None and settings.jwt_jwks_file is None:
            return None
        jwks = None if settings.jwt_jwks_file is None else load_jwks(settings.jwt_jwks_file)
        return cls(secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None, jwks=jwks,
                   issuer=settings.jwt_issuer, audience=settings.jwt_audience, role_claim=settings.jwt_role_claim,
                   leeway_s=settings.jwt_leeway_s)

    def _key(self, alg: str, kid: str | None) -> Any:
        if alg == "HS256":
            if self._secret is None:
                raise Unauthenticated("bearer JWT rejected: HS256 tokens are not accepted here (no SERVE_ML_JWT_SECRET)")
            return self._secret
        kty = "RSA" if alg == "RS256" else "EC"
        fitting = [(k, key) for k, t, key in self._keys if t == kty and (kid is None or k == kid)]
        if len(fitting) != 1:
            raise Unauthenticated(f"bearer JWT rejected: no {alg} key" + (f" with kid {kid[:64]!r}" if kid else "")
                                  + " in the JWKS file")
        return fitting[0][1]

    def principal(self, token: str) -> Principal:
        """The token's role and subject; Unauthenticated (401) when it cannot be
        trusted, Forbidden (403) when it is valid but names no role."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("bearer JWT rejected: malformed") from None
        alg = header.get("alg")
        if alg not in JWT_ALGORITHMS:
            raise Unauthenticated(f"bearer JWT rejected: algorithm {str(alg)[:16]!r} is not one of "
                                  f"{', '.join(sorted(JWT_ALGORITHMS))}")
        kid = header.get("kid")
        key = self._key(alg, kid if isinstance(kid, str) else None)
        required = ["exp"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        try:
            claims = jwt.decode(token, key, algorithms=[alg], issuer=self.issuer, audience=self.audience,
                                leeway=self.leeway_s, options={"require": required,
                                                               "verify_aud": self.audience is not None})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"bearer JWT rejected: {exc}"[:200]) from None
        value: Any = claims
        for part in self.role_claim:
            value = value.get(part) if isinstance(value, dict) else None
        roles = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        known = [r for r in roles if isinstance(r, str) and r in ROLE_RANK]
        if not known:
            raise Forbidden(f"the JWT's {'.'.join(self.role_claim)!r} claim names no role of viewer, operator, admin")
        subject = claims.get("sub")
        return Principal(max(known, key=ROLE_RANK.__getitem__), f"jwt:{subject}" if subject else "jwt")


def load_jwks(path: Path) -> dict[str, Any]:
    """A JWKS document (``{"keys": [...]}``), refused with the reason when it is not one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"SERVE_ML_JWT_JWKS_FILE {path}: cannot read a JSON key set ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"SERVE_ML_JWT_JWKS_FILE {path}: not a JWKS document (no 'keys' list)")
    return doc


class TokenGuard:
    def __init__(self, admin_token: str | None, read_token: str | None, *,
                 operator_token: str | None = None, jwt: JwtVerifier | None = None) -> None:
        self._tokens = [(t.encode(), role) for t, role in ((admin_token, "admin"), (operator_token, "operator"),
                                                            (read_token, "viewer")) if t]
        self._admin = admin_token is not None
        self._operator = operator_token is not None
        self._read = read_token is not None
        self._jwt = jwt

    @classmethod
    def of(cls, settings: Settings) -> TokenGuard:
        """The guard the settings ask for (tokens from the process's environment)."""
        secret = settings.operator_token
        return cls(settings.admin_secret(), settings.read_token.get_secret_value() if settings.read_token else None,
                   operator_token=secret.get_secret_value() if secret else None, jwt=JwtVerifier.of(settings))

    @staticmethod
    def _bearer(header: str | None) -> str:
        if not header or not header.startswith("Bearer ") or len(header) > 8192:
            raise Unauthenticated()
        return header[7:].strip()

    def principal(self, header: str | None) -> Principal:
        """Who the bearer is. 401 without a bearer or with an untrusted JWT; 403 for a
        token that is none of ours."""
        presented = self._bearer(header)
        raw = presented.encode()
        # every comparison is made, so the time taken says nothing about which matched
        matched = [role for token, role in self._tokens if hmac.compare_digest(raw, token)]
        if matched:
            return Principal(matched[0], f"token:{matched[0]}")
        if self._jwt is not None and presented.count(".") == 2:
            return self._jwt.principal(presented)
        raise Forbidden()

    def _at_least(self, header: str | None, role: str) -> Principal:
        who = self.principal(header)
        if ROLE_RANK[who.role] < ROLE_RANK[role]:
            raise Forbidden(f"needs the {role} role; this bearer has {who.role}")
        return who

    def admin(self, header: str | None) -> Principal:
        if not self._admin and self._jwt is None:
            raise Forbidden("management is disabled: set SERVE_ML_ADMIN_TOKEN (or SERVE_ML_ADMIN_TOKEN_FILE, or "
                            "an identity system: SERVE_ML_JWT_SECRET / SERVE_ML_JWT_JWKS_FILE)")
        return self._at_least(header, "admin")

    def operator(self, header: str | None) -> Principal:
        """Check an operator action; return who takes it (an operator or an admin)."""
        if not self._operator and not self._admin and self._jwt is None:
            raise Forbidden("operations changes are disabled: set SERVE_ML_OPERATOR_TOKEN (or an admin token, or "
                            "an identity system)")
        return self._at_least(header, "operator")

    @property
    def reads_open(self) -> bool:
        return not self._read and self._jwt is None

    def role(self, header: str | None) -> str:
        """The role the presented bearer holds; with none, ``viewer`` when reads need
        no token, else ``anonymous`` (may do nothing). A bearer that is none of ours
        is refused."""
        if header:
            try:
                return self.principal(header).role
            except (Forbidden, Unauthenticated):
                if not self.reads_open:
                    raise
                return "viewer"  # the reads are open anyway; a stale token changes nothing
        return "viewer" if self.reads_open else "anonymous"

    def read(self, header: str | None) -> None:
        if self.reads_open:
            return
        self.principal(header)
