"""``serve-ml bundle build|validate|list|demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serve_ml.cli.state import admin_request
from serve_ml.core.errors import BundleInvalid
from serve_ml.core.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="build, validate and list model bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True)

    b = bsub.add_parser("build", help="train a bundle from a CSV or the built-in simulator")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="training CSV (AI4I 2020 format, or numeric columns + 'label')")
    src.add_argument("--simulator", action="store_true", help="train on the built-in sensor simulator")
    b.add_argument("--equipment-id", required=True)
    b.add_argument("--power", required=True, help="power class label, e.g. 7.5kW")
    b.add_argument("--model-version", required=True, help="PEP 440 version, e.g. 1.1.0")
    b.add_argument("--power-range-kw", default="0,1000", help="LOW,HIGH: readings in [LOW, HIGH) kW")
    b.add_argument("--default-power", action="store_true", help="declare this power class the fallback")
    b.add_argument("--modality", action="append", metavar="NAME=F1,F2",
                   help="modality and its features (repeatable); default: thermal + mechanical")
    b.add_argument("--no-classifier", action="store_true", help="gate-only bundle (no xgb.json)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--epochs", type=int, default=60)
    b.add_argument("--root", type=Path, help="bundle root (default SERVE_ML_ROOT)")
    b.set_defaults(func=_build)

    v = bsub.add_parser("validate", help="validate one bundle directory")
    v.add_argument("path", type=Path)
    v.add_argument("--root", type=Path, help="bundle root (default: three levels above PATH)")
    v.set_defaults(func=_validate)

    ls = bsub.add_parser("list", help="list bundles under the root, with the live version and rejections")
    ls.add_argument("--root", type=Path)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    for name, helptext in (("activate", "make a version live (pinned unless --no-pin)"),
                           ("rollback", "back to the previously live version"),
                           ("unpin", "drop the explicit live version (newest wins)")):
        a = bsub.add_parser(name, help=helptext + " on the running system")
        a.add_argument("equipment_id")
        a.add_argument("power")
        if name == "activate":
            a.add_argument("model_version")
            a.add_argument("--no-pin", action="store_true")
        a.add_argument("--reason", default="")
        a.add_argument("--url", help="server URL (default: from `serve-ml status`)")
        a.set_defaults(func=_change, action=name)
    up = bsub.add_parser("upload", help="upload a bundle directory to the running system")
    up.add_argument("path", type=Path)
    up.add_argument("--url")
    up.set_defaults(func=_upload)

    d = bsub.add_parser("demo", help="build the demo fleet (3 equipment x 2 power classes)")
    d.add_argument("--root", type=Path)
    d.add_argument("--if-missing", action="store_true", help="do nothing when the root already has bundles")
    d.add_argument("--csv", type=Path, help="AI4I CSV for mill-01 (default ../shared/datasets/ai4i2020)")
    d.set_defaults(func=_demo)


def _root(args: argparse.Namespace) -> Path:
    return (args.root or Settings().root).resolve()


def _build(args: argparse.Namespace) -> int:
    from serve_ml.bundles.builder import BuildSpec, build_bundle
    from serve_ml.bundles.datasets import file_sha256, read_training_csv
    from serve_ml.bundles.demo import TORQUE_SPEED
    from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset

    lo, hi = (float(x) for x in args.power_range_kw.split(","))
    if args.modality:
        mods = {m.split("=", 1)[0]: m.split("=", 1)[1].split(",") for m in args.modality}
    elif args.csv:
        mods = {"thermal": list(THERMAL), "mechanical": ["speed_rpm", "torque_nm", "tool_wear_min"]}
    else:
        mods = {"thermal": list(THERMAL), "mechanical": list(MECHANICAL)}
    spec = BuildSpec(equipment_id=args.equipment_id, power=args.power, model_version=args.model_version,
                     power_range_kw=(lo, hi), default_power=args.default_power, power_source=TORQUE_SPEED,
                     modalities=mods, classifier=not args.no_classifier, seed=args.seed, epochs=args.epochs)
    if args.csv:
        cols, labels = read_training_csv(args.csv)
        data, sha = args.csv.name, file_sha256(args.csv)
    else:
        cols, labels = simulate_dataset(4000, 300, spec=MachineSpec.for_power(args.power), seed=args.seed)
        data, sha = f"simulator:{args.power}:seed={args.seed}", None
    missing = sorted({f for fs in mods.values() for f in fs} - set(cols))
    if missing:
        print(f"error: training data has no column(s) {missing}", file=sys.stderr)
        return 2
    path, metrics = build_bundle(spec, cols, labels, _root(args), data=data, data_sha256=sha)
    print(json.dumps({"path": str(path), "metrics": metrics}, indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from serve_ml.bundles.loader import load_bundle

    path = args.path.resolve()
    root = (args.root or path.parents[2]).resolve()
    try:
        b = load_bundle(path, root)
    except BundleInvalid as exc:
        print(f"INVALID {exc.message}", file=sys.stderr)
        return 1
    m = b.manifest
    print(f"OK {m.equipment_id}/{m.power}/{m.model_version} modalities={list(m.modalities)} "
          f"classifier={'yes' if m.classifier else 'no'} sha256={b.digest[:12]}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.scoring.service import describe_catalog

    cat = Catalog.scan(_root(args))
    items = describe_catalog(cat)
    rejected = [{"path": r.path, "reason": r.reason} for r in cat.rejected]
    if args.json:
        print(json.dumps({"root": str(cat.root), "bundles": items, "rejected": rejected}, indent=2))
        return 0
    print(f"root: {cat.root}")
    for b in items:
        mods = ",".join(b["modalities"])
        print(f"  {'*' if b['live'] else ' '} {b['equipment_id']}/{b['power']}/{b['model_version']}"
              f"  modalities={mods}  classifier={'yes' if b['classifier'] else 'no'}")
    for r in rejected:
        print(f"  REJECTED {r['path']}: {r['reason']}")
    print("(* = live)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from serve_ml.bundles.demo import AI4I_CSV, build_demo

    root = _root(args)
    if args.if_missing and root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        print(f"demo bundles present in {root}")
        return 0
    for p in build_demo(root, csv=args.csv or AI4I_CSV):
        print(p)
    return 0




def _change(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"reason": args.reason}
    if args.action == "activate":
        body.update(model_version=args.model_version, pin=not args.no_pin)
    return admin_request("POST", f"/bundles/{args.equipment_id}/{args.power}/{args.action}", args.url, json=body)


def _upload(args: argparse.Namespace) -> int:
    from serve_ml.bundles.archive import pack_bundle

    return admin_request("POST", "/bundles/upload", args.url, content=pack_bundle(args.path))
