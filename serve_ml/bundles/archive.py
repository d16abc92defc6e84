"""Install a bundle from an uploaded ``.tar.gz``, safely and atomically.

The archive holds one bundle's files at its top level (``manifest.json`` and the
files it lists). Extraction never trusts the archive: only regular files with safe
flat names are written, by us, byte-counted against limits (so a decompression bomb
stops early); links, devices, directories, absolute paths and ``..`` are refused.
The bundle is validated (checksums, shapes, warm-up) in ``<root>/.staging`` and then
renamed into place, so the root never holds a partial bundle.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tarfile
import time
import uuid
from pathlib import Path

from serve_ml.bundles.loader import Bundle, load_bundle
from serve_ml.bundles.manifest import MANIFEST_NAME, is_safe_segment
from serve_ml.bundles.warmup import verify_warmup
from serve_ml.core.errors import BundleExists, BundleInvalid

MAX_MEMBERS = 64
MAX_TOTAL_BYTES = 128 << 20
STALE_STAGING_S = 3600.0


def _refuse(reason: str) -> BundleInvalid:
    return BundleInvalid("upload", reason)


def install_archive(data: bytes, root: Path) -> Bundle:
    root = Path(root).resolve()
    sweep_staging(root)
    staging = root / ".staging" / f"upload-{uuid.uuid4().hex}"
    flat = staging / "flat"
    flat.mkdir(parents=True)
    try:
        _extract(data, flat)
        try:
            manifest = json.loads((flat / MANIFEST_NAME).read_bytes())
            eq, power, version = manifest["equipment_id"], manifest["power"], manifest["model_version"]
        except (OSError, ValueError, KeyError, TypeError):
            raise _refuse(f"archive has no readable {MANIFEST_NAME} with equipment_id, power, model_version") from None
        if not all(isinstance(x, str) and is_safe_segment(x) for x in (eq, power, version)):
            raise _refuse("manifest identity is not made of safe path segments")
        bdir = staging / eq / power / version
        bdir.parent.mkdir(parents=True)
        os.rename(flat, bdir)
        bundle = load_bundle(bdir, staging)
        verify_warmup(bundle)
        final = root / eq / power / version
        place(bdir, final, f"{eq}/{power}/{version}")
        return load_bundle(final, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def place(bdir: Path, final: Path, name: str) -> None:
    """Rename a validated bundle into the root. The rename is the one check that
    holds when two uploads of the same version race (an ``exists()`` before it does
    not): the loser finds the directory there and gets 409."""
    exists = BundleExists(f"{name} already exists; bundles are immutable, upload a new version")
    if final.exists():
        raise exists
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(bdir, final)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise exists from None
        raise


def sweep_staging(root: Path, older_than_s: float = STALE_STAGING_S) -> list[Path]:
    """Remove upload directories a crashed install left in ``<root>/.staging``; ones
    younger than ``older_than_s`` may belong to an upload still running elsewhere."""
    removed = []
    cutoff = time.time() - older_than_s
    for entry in (Path(root) / ".staging").glob("upload-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        except OSError:
            continue  # removed meanwhile by another replica's sweep
    return removed


def _extract(data: bytes, dest: Path) -> None:
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for count, m in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise _refuse(f"more than {MAX_MEMBERS} members")
                name = m.name[2:] if m.name.startswith("./") else m.name
                if m.isdir() and name in ("", "."):
                    continue
                if m.issym() or m.islnk():
                    raise _refuse(f"{m.name!r} is a link; links are not allowed")
                if not m.isfile():
                    raise _refuse(f"{m.name!r} is not a regular file")
                if name.startswith("/") or ".." in name or "/" in name or not is_safe_segment(name):
                    raise _refuse(f"{m.name!r} is not a safe flat file name")
                if (dest / name).exists():
                    raise _refuse(f"{name!r} appears twice")
                src = tar.extractfile(m)
                if src is None:
                    raise _refuse(f"{m.name!r} cannot be read")
                with (dest / name).open("wb") as out:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > MAX_TOTAL_BYTES:
                            raise _refuse(f"archive expands beyond {MAX_TOTAL_BYTES} bytes")
                        out.write(chunk)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, BundleInvalid):
            raise
        raise _refuse(f"not a readable tar archive: {type(exc).__name__}") from None


def pack_bundle(path: Path) -> bytes:
    """A ``.tar.gz`` of one bundle directory, in the layout ``install_archive`` reads."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(Path(path).iterdir()):
            tar.add(f, arcname=f.name, recursive=False)
    return buf.getvalue()
