"""Integration tests share the session's fixtures (tests/fixtures.py); these names
are re-exported for the tests that import them."""

from tests.fixtures import ADMIN, ADMIN_TOKEN, API

__all__ = ["ADMIN", "ADMIN_TOKEN", "API"]
