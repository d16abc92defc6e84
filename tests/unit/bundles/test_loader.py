"""Loading validates everything and refuses with a precise reason."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from serve_ml.bundles.loader import load_bundle, sha256_file
from serve_ml.core.errors import BundleInvalid

B = ("press-02", "7.5kW", "1.0.0")


def bundle_dir(root: Path) -> Path:
    return root.joinpath(*B)


def edit_manifest(path: Path, fn) -> None:
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def refuse(root: Path, match: str) -> None:
    with pytest.raises(BundleInvalid, match=match):
        load_bundle(bundle_dir(root), root)


def test_demo_bundle_loads(root_copy: Path) -> None:
    b = load_bundle(bundle_dir(root_copy), root_copy)
    assert b.key == B
    assert set(b.modalities) == {"thermal", "mechanical"}
    assert b.classifier is not None and b.classifier.spec.classes[0] == "none"


def test_unknown_schema_version(root_copy: Path) -> None:
    edit_manifest(bundle_dir(root_copy), lambda m: m.update(schema_version=2))
    refuse(root_copy, "unknown schema_version 2")


def test_missing_file(root_copy: Path) -> None:
    (bundle_dir(root_copy) / "thermal.pt").unlink()
    refuse(root_copy, r"missing files: \['thermal.pt'\]")


def test_extra_file(root_copy: Path) -> None:
    (bundle_dir(root_copy) / "notes.txt").write_text("hi")
    refuse(root_copy, r"extra files not in the manifest: \['notes.txt'\]")


def test_checksum_mismatch(root_copy: Path) -> None:
    w = bundle_dir(root_copy) / "mechanical.pt"
    state = torch.load(w, weights_only=True)
    state["0.bias"] = state["0.bias"] + 1.0
    torch.save(state, w)
    refuse(root_copy, "checksum mismatch for mechanical.pt")


def _rewrite_checksums(path: Path) -> None:
    edit_manifest(path, lambda m: m.update(files={k: sha256_file(path / k) for k in m["files"]}))


def test_shape_mismatch(root_copy: Path) -> None:
    p = bundle_dir(root_copy)
    state = torch.load(p / "thermal.pt", weights_only=True)
    state["0.weight"] = torch.zeros(7, 2)
    torch.save(state, p / "thermal.pt")
    _rewrite_checksums(p)
    refuse(root_copy, "thermal.pt: shape mismatch")


def test_truncated_weights(root_copy: Path) -> None:
    p = bundle_dir(root_copy)
    data = (p / "thermal.pt").read_bytes()
    (p / "thermal.pt").write_bytes(data[: len(data) // 2])
    _rewrite_checksums(p)
    refuse(root_copy, "thermal.pt: not a loadable torch state dict")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/serve-ml-pwned",))


def test_pickled_object_is_never_executed(root_copy: Path) -> None:
    p = bundle_dir(root_copy)
    with (p / "thermal.pt").open("wb") as f:
        pickle.dump({"0.weight": Evil()}, f)
    _rewrite_checksums(p)
    refuse(root_copy, "thermal.pt: not a loadable torch state dict")
    assert not Path("/tmp/serve-ml-pwned").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_bad_threshold(root_copy: Path, bad: float) -> None:
    p = bundle_dir(root_copy)
    text = (p / "manifest.json").read_text()
    m = json.loads(text)
    m["modalities"]["thermal"]["threshold"] = bad
    (p / "manifest.json").write_text(json.dumps(m))  # json writes NaN/Infinity literals
    refuse(root_copy, "modalities.thermal.threshold")


def test_identity_must_match_directory(root_copy: Path) -> None:
    edit_manifest(bundle_dir(root_copy), lambda m: m.update(model_version="9.9.9"))
    refuse(root_copy, "does not match the directory")


def test_unsafe_names_in_manifest(root_copy: Path) -> None:
    edit_manifest(bundle_dir(root_copy), lambda m: m["files"].update({"../escape.pt": "0" * 64}))
    refuse(root_copy, "not a safe path segment")


def test_link_outside_root(root_copy: Path, tmp_path: Path) -> None:
    p = bundle_dir(root_copy)
    outside = tmp_path / "outside.pt"
    outside.write_bytes((p / "thermal.pt").read_bytes())
    (p / "thermal.pt").unlink()
    (p / "thermal.pt").symlink_to(outside)
    refuse(root_copy, "link pointing outside the root")


def test_bundle_dir_link_outside_root(root_copy: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    bundle_dir(root_copy).rename(real)
    bundle_dir(root_copy).symlink_to(real)
    refuse(root_copy, "link pointing outside the root")


def test_dense_weights_declared_as_a_sequence_model_are_refused(root_copy: Path) -> None:
    edit_manifest(bundle_dir(root_copy), lambda m: m["modalities"]["thermal"].update(
        model={"kind": "lstm_autoencoder", "window_steps": 30, "hidden_size": 8}))
    refuse(root_copy, "shape mismatch with the declared architecture")


def test_gate_only_bundle_has_no_classifier(root_copy: Path) -> None:
    b = load_bundle(root_copy / "pump-03" / "7.5kW" / "1.0.0", root_copy)
    assert b.classifier is None and b.manifest.classifier is None


def test_warmup_mismatch_is_rejected_by_the_catalog(root_copy: Path) -> None:
    from serve_ml.bundles.catalog import Catalog

    p = bundle_dir(root_copy)
    w = json.loads((p / "warmup.json").read_text())
    w["expected"][0]["score"] *= 1.5
    (p / "warmup.json").write_text(json.dumps(w))
    _rewrite_checksums(p)
    load_bundle(p, root_copy)  # loads: files and shapes are fine ...
    cat = Catalog.scan(root_copy)  # ... but it never becomes visible
    assert B not in cat.bundles
    assert any("warm-up mismatch: row 0 score" in r.reason for r in cat.rejected)


def _rewrite_warmup(path: Path, doc: object) -> None:
    (path / "warmup.json").write_text(json.dumps(doc))
    edit_manifest(path, lambda m: m["files"].update({"warmup.json": sha256_file(path / "warmup.json")}))


@pytest.mark.parametrize(("doc", "match"), [
    ({"rows": 5}, "warmup.json: rows: Input should be a valid array; expected: Field required"),
    ({"rows": 5, "expected": 5}, "warmup.json: rows: Input should be a valid array"),
    ({"rows": [{"x": "hot"}], "expected": [{"score": 1, "anomaly": False}]}, r"warmup.json: rows.0.x"),
    ({"rows": [{"x": 1.0}], "expected": []}, "expected: List should have at least 1 item"),
    ({"rows": [{"x": 1.0}, {"x": 2.0}], "expected": [{"score": 1.0, "anomaly": False}]}, "2 rows but 1 expected"),
    ([1, 2], "warmup.json: document: Input should be an object"),
])
def test_a_malformed_warmup_file_refuses_the_bundle_by_its_schema(root_copy: Path, doc: object, match: str) -> None:
    _rewrite_warmup(bundle_dir(root_copy), doc)
    refuse(root_copy, match)


def test_a_manifest_nested_5000_deep_is_refused_not_raised(root_copy: Path) -> None:
    (bundle_dir(root_copy) / "manifest.json").write_text("[" * 5000 + "]" * 5000)
    refuse(root_copy, "nested too deeply")


def test_one_broken_bundle_is_rejected_and_the_others_load(root_copy: Path) -> None:
    from serve_ml.bundles.catalog import Catalog

    _rewrite_warmup(bundle_dir(root_copy), {"rows": 5, "expected": 5})
    other = root_copy / "pump-03"
    (next(other.glob("*/*")) / "manifest.json").write_text("[" * 5000 + "]" * 5000)
    cat = Catalog.scan(root_copy)
    reasons = {Path(r.path).parts[-3]: r.reason for r in cat.rejected}
    assert set(reasons) == {"press-02", "pump-03"}, reasons
    assert "warmup.json" in reasons["press-02"] and "nested too deeply" in reasons["pump-03"]
    assert any(eq == "mill-01" for eq, _p, _v in cat.bundles)
