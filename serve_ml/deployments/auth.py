"""Bearer-token checks for the HTTP API.

Management endpoints need the admin token; with none configured they are refused
outright. Predict and read endpoints need the read token only when one is set.
Comparison is constant-time; failures say nothing about why beyond 401/403, and
tokens never reach logs, errors or metric labels.
"""

from __future__ import annotations

import hmac

from serve_ml.core.errors import Forbidden, Unauthenticated


class TokenGuard:
    def __init__(self, admin_token: str | None, read_token: str | None) -> None:
        self._admin = admin_token.encode() if admin_token else None
        self._read = read_token.encode() if read_token else None

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

    def read(self, header: str | None) -> None:
        if self._read is None:
            return
        presented = self._bearer(header)
        ok = hmac.compare_digest(presented, self._read)
        if not ok and self._admin is not None:
            ok = hmac.compare_digest(presented, self._admin)  # the admin token may read too
        if not ok:
            raise Forbidden()
