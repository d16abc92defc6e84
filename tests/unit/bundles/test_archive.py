"""Bundle upload archives: installed atomically when valid, refused with a reason
when hostile, and never written outside the root."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

import serve_ml.bundles.archive as archive
from serve_ml.bundles.archive import install_archive, pack_bundle
from serve_ml.core.errors import BundleExists, BundleInvalid
from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from tests.conftest import build_sim_bundle


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sim_bundle(tmp_path_factory.mktemp("src"), "lathe-07", "7.5kW", "1.0.0", classifier=False)


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def snapshot(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_valid_archive_installs_atomically(built: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    b = install_archive(pack_bundle(built), root)
    assert b.key == ("lathe-07", "7.5kW", "1.0.0") and (root / "lathe-07" / "7.5kW" / "1.0.0").is_dir()
    assert not (root / ".staging").exists() or not any((root / ".staging").iterdir())
    with pytest.raises(BundleExists):
        install_archive(pack_bundle(built), root)


@pytest.mark.parametrize("members, reason", [
    ([file("../evil.pt")], "not a safe flat file name"),
    ([file("/etc/evil")], "not a safe flat file name"),
    ([file("sub/evil.pt")], "not a safe flat file name"),
    ([link("manifest.json", "/etc/passwd", tarfile.SYMTYPE)], "is a link"),
    ([link("manifest.json", "other", tarfile.LNKTYPE)], "is a link"),
    ([file("a"), file("a")], "appears twice"),
    ([(tarfile.TarInfo("fifo"), None)], None),
])
def test_hostile_archives_refused(tmp_path: Path, members, reason) -> None:
    if reason is None:  # a FIFO member
        members[0][0].type = tarfile.FIFOTYPE
        reason = "not a regular file"
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(BundleInvalid, match=reason):
        install_archive(tar_of(members), root)
    assert snapshot(tmp_path) - before <= {"root/.staging"}


def test_decompression_bomb_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1 << 20)
    with pytest.raises(BundleInvalid, match="expands beyond"):
        install_archive(tar_of([file("manifest.json", b"\0" * (4 << 20))]), tmp_path)


def test_pickle_and_tampered_files_refused(built: Path, tmp_path: Path) -> None:
    data = tar_of([*((tarfile.TarInfo(p.name), p.read_bytes()) for p in built.iterdir()),
                   file("payload.pkl", pickle.dumps({"x": 1}))])
    with pytest.raises(BundleInvalid, match="extra files not in the manifest"):
        install_archive(data, tmp_path)
    tampered = [(tarfile.TarInfo(p.name), p.read_bytes() if p.name != "thermal.pt" else b"junk")
                for p in built.iterdir()]
    with pytest.raises(BundleInvalid, match="checksum mismatch"):
        install_archive(tar_of(tampered), tmp_path)
    assert not (tmp_path / "lathe-07").exists()


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid, match="not a readable tar archive"):
        install_archive(b"PK\x03\x04 zip, not tar", tmp_path)


def test_upload_endpoint(built: Path, root_copy: Path) -> None:
    c = TestClient(create_local_app(Settings(root=root_copy, admin_token=SecretStr("test-admin-token-01"))))
    url = "/api/v1/serve-ml/bundles/upload"
    headers = {"content-type": "application/gzip"}
    assert c.post(url, content=pack_bundle(built), headers=headers).status_code == 401
    auth = {**headers, "Authorization": "Bearer test-admin-token-01"}
    r = c.post(url, content=pack_bundle(built), headers=auth)
    assert r.status_code == 200 and r.json()["installed"] == "lathe-07/7.5kW/1.0.0"
    assert r.json()["sync"]["added"] == ["lathe-07/7.5kW/1.0.0"]
    assert c.post(url, content=pack_bundle(built), headers=auth).status_code == 409
    bad = c.post(url, content=tar_of([file("../x")]), headers=auth)
    assert bad.status_code == 422 and "not a safe flat file name" in bad.json()["message"]


def test_the_loser_of_two_racing_uploads_gets_409_not_500(built: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "root" / "lathe-07" / "7.5kW" / "1.0.0"
    shutil.copytree(built, final)  # the other upload renamed first, after our exists() check
    loser = tmp_path / "staged"
    shutil.copytree(built, loser)
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, **kw: self != final and real_exists(self, **kw))
    with pytest.raises(BundleExists, match="already exists"):
        archive.place(loser, final, "lathe-07/7.5kW/1.0.0")
    monkeypatch.undo()
    assert loser.is_dir() and sorted(p.name for p in final.iterdir()) == sorted(p.name for p in built.iterdir())


def test_a_crashed_install_leaves_no_staging_behind_the_next_one(built: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    stale, fresh = root / ".staging" / "upload-dead", root / ".staging" / "upload-running"
    for d in (stale, fresh):
        (d / "flat").mkdir(parents=True)
        (d / "flat" / "thermal.pt").write_bytes(b"x" * 1000)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    install_archive(pack_bundle(built), root)
    assert not stale.exists() and fresh.exists()
