"""What the server and its clients must agree on about HTTP paths."""

from __future__ import annotations

API_PREFIX = "/api/v1/serve-ml"
"""Every route of the JSON API is under this prefix (the V2 protocol's are under ``/v2``)."""
