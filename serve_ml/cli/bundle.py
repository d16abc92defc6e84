"""``serve-ml bundle ...``: build/evaluate (``train.py``), validate, list, demo and management."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serve_ml.cli import train
from serve_ml.cli.state import admin_request
from serve_ml.core.errors import BundleInvalid


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="build, validate and list model bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True)

    train.register(bsub)

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
    return (args.root or args.settings.root).resolve()


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
    return admin_request(args.settings, "POST", f"/bundles/{args.equipment_id}/{args.power}/{args.action}", args.url, json=body)


def _upload(args: argparse.Namespace) -> int:
    from serve_ml.bundles.archive import pack_bundle

    return admin_request(args.settings, "POST", "/bundles/upload", args.url, content=pack_bundle(args.path))
