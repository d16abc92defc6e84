"""Bearer-token checks for the HTTP API, by role: ``admin`` (bundles, sync),
``operator`` (equipment, thresholds, alarm acknowledgement; the admin token may
act as operator), ``viewer`` (predict and reads).

Management endpoints need the admin token; with none configured they are refused
outright, and so are operator endpoints with neither an operator nor an admin
token. Predict and read endpoints need the read token only when one is set.
Comparison is constant-time; failures say nothing about why beyond 401/403, and
tokens never reach logs, errors or metric labels.
"""

from __future__ import annotations

import hmac

from serve_ml.core.errors import Forbidden, Unauthenticated
from serve_ml.core.settings import Settings


class TokenGuard:
    def __init__(self, admin_token: str | None, read_token: str | None, *,
                 operator_token: str | None = None) -> None:
        self._admin = admin_token.encode() if admin_token else None
        self._read = read_token.encode() if read_token else None
        self._operator = operator_token.encode() if operator_token else None

    @classmethod
    def of(cls, settings: Settings) -> TokenGuard:
        """The guard the settings ask for (tokens from the process's environment)."""
        secret = settings.operator_token
        return cls(settings.admin_secret(), settings.read_token.get_secret_value() if settings.read_token else None,
                   operator_token=secret.get_secret_value() if secret else None)

    @staticmethod
    def _bearer(header: str | None) -> bytes:
        if not header or not header.startswith("Bearer ") or len(header) > 4096:
            raise Unauthenticated()
        return header[7:].strip().encode()

    def admin(self, header: str | None) -> None:
        if self._admin is None:
            raise Forbidden("management is disabled: set SERVE_ML_ADMIN_TOKEN (or SERVE_ML_ADMIN_TOKEN_FILE)")
        if not hmac.compare_digest(self._bearer(header), self._admin):
            raise Forbidden()

    def operator(self, header: str | None) -> str:
        """Check an operator action; return the role that may take it."""
        if self._operator is None and self._admin is None:
            raise Forbidden("operations changes are disabled: set SERVE_ML_OPERATOR_TOKEN (or an admin token)")
        presented = self._bearer(header)
        if self._operator is not None and hmac.compare_digest(presented, self._operator):
            return "operator"
        if self._admin is not None and hmac.compare_digest(presented, self._admin):
            return "admin"
        raise Forbidden()

    def role(self, header: str | None) -> str:
        """The strongest role the presented token holds: ``admin``, ``operator`` or
        ``viewer``; with no token, ``viewer`` when reads need none, else ``anonymous``
        (may do nothing). A token that is none of them is refused."""
        presented = self._bearer(header) if header else None
        if presented is not None:
            if self._admin is not None and hmac.compare_digest(presented, self._admin):
                return "admin"
            if self._operator is not None and hmac.compare_digest(presented, self._operator):
                return "operator"
            if self._read is not None and hmac.compare_digest(presented, self._read):
                return "viewer"
        if self._read is None:
            return "viewer"
        if presented is None:
            return "anonymous"
        raise Forbidden()

    def read(self, header: str | None) -> None:
        if self._read is None:
            return
        presented = self._bearer(header)
        ok = hmac.compare_digest(presented, self._read)
        if not ok and self._admin is not None:
            ok = hmac.compare_digest(presented, self._admin)  # the admin token may read too
        if not ok and self._operator is not None:
            ok = hmac.compare_digest(presented, self._operator)
        if not ok:
            raise Forbidden()
