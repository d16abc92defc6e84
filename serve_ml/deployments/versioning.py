"""Stable Serve code versions for imperative deploys.

Serve replaces a deployment's replicas when its code version changes and applies
option-only changes (autoscaling, queue limits) to the running replicas in place.
``serve deploy`` derives that version from the config; ``serve.run`` from Python
leaves it unset, which Serve turns into a random string, so every redeploy (a
``serve-ml scale``, a sync that adds an equipment) restarted every replica. Here the
version is a hash of the code the replicas run plus the deployment's init args: the
same code and args keep their replicas, anything else rolls them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import orjson

from serve_ml.core.settings import REPO_ROOT

REPLICA_PACKAGES = ("bundles", "deployments", "serve_ml")


@lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """sha256 over the Python sources the replicas import."""
    h = hashlib.sha256()
    for pkg in REPLICA_PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(REPO_ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def code_version(*init_args: Any) -> str:
    """The version for one deployment: source fingerprint + its (JSON-able) init args."""
    h = hashlib.sha256(source_fingerprint().encode())
    h.update(orjson.dumps(init_args, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
    return h.hexdigest()[:16]
