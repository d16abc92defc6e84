"""``serve-ml bundle build`` and ``serve-ml bundle evaluate``: train from a CSV and measure."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

KIND_NAMES = {"dense": "dense_autoencoder", "lstm": "lstm_autoencoder"}


def register(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser("build", help="train a bundle from a CSV or the built-in simulator")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="training CSV: AI4I 2020, or any CSV with numeric sensor columns")
    src.add_argument("--simulator", action="store_true", help="train on the built-in sensor simulator")
    b.add_argument("--equipment-id", required=True)
    b.add_argument("--power", required=True, help="power class label, e.g. 7.5kW")
    b.add_argument("--model-version", required=True, help="PEP 440 version, e.g. 1.1.0")
    b.add_argument("--power-range-kw", default="0,1000", help="LOW,HIGH: readings in [LOW, HIGH) kW")
    b.add_argument("--default-power", action="store_true", help="declare this power class the fallback")
    b.add_argument("--modality", action="append", metavar="NAME=F1,F2",
                   help="modality and its features (repeatable); default: thermal + mechanical")
    b.add_argument("--derived", action="append", metavar="NAME=OP:A,B",
                   help="a feature the bundle computes (repeatable); OP is sum, difference, product, ratio or "
                        "power_w. Default on AI4I: power_w, delta_t_k, torque_x_wear")
    b.add_argument("--classifier-features", metavar="F1,F2", help="classifier inputs (raw or derived); "
                   "default on AI4I: the five sensors, type_code and the derived features; else the modalities'")
    b.add_argument("--label-column", help="CSV column with the row's label (default 'label' when present)")
    b.add_argument("--normal-label", help="label of normal rows (default 'none', or 0 for a 0/1 column)")
    b.add_argument("--sep", help="CSV delimiter (default: sniffed among , ; tab |)")
    b.add_argument("--time-column", help="CSV column with each row's time (a number, or ISO-8601): train, "
                   "calibrate and evaluate on consecutive blocks of time instead of random rows")
    b.add_argument("--unit-column", help="CSV column naming each row's unit (machine): hold out whole units")
    b.add_argument("--split", choices=["random", "time", "unit"],
                   help="how rows are held out (default: unit with --unit-column, else time with "
                        "--time-column, else random)")
    b.add_argument("--no-classifier", action="store_true", help="gate-only bundle (no xgb.json)")
    b.add_argument("--classifier-only", action="store_true",
                   help="no gate: the classifier alone answers (its features: --classifier-features, else the "
                        "modalities' features)")
    b.add_argument("--classifier-mode", choices=["boosted", "random_forest"], default="boosted",
                   help="gradient boosting, or XGBoost's random-forest mode (trees = --classifier-rounds)")
    b.add_argument("--classifier-rounds", type=int, default=150, help="boosting rounds (random forest: trees)")
    b.add_argument("--cascade", choices=["auto", "always", "gate_then_classify"], default="auto",
                   help="run the classifier only on rows the gate flags (gate_then_classify), or on every row "
                        "(always); auto: the cascade unless it costs more than 0.01 binary F1 on held-out rows")
    b.add_argument("--power-feature", help="the feature holding power in kW (default: from torque_nm and "
                   "speed_rpm when the data has both, else none)")
    b.add_argument("--threshold-quantile", type=float,
                   help="gate threshold: this quantile of held-out normal errors (default 0.995); "
                        "short for --threshold-rule quantile:Q")
    b.add_argument("--threshold-rule", metavar="RULE[:PARAMS]",
                   help="quantile[:Q], quantile_factor[:Q,FACTOR] (default 0.99,1.5) or pot[:Q,RISK] "
                        "(peaks over threshold, default 0.98,1e-4); recorded in the manifest")
    b.add_argument("--rul", action="store_true",
                   help="add a remaining-useful-life head, from run-to-failure data (needs --unit-column and "
                        "--time-column; rows at or above the cap are the gates' normal rows)")
    b.add_argument("--rul-cap", type=float, default=125.0, help="cap on the RUL target (0: uncapped)")
    b.add_argument("--rul-unit", choices=["cycles", "hours", "minutes"], default="cycles")
    b.add_argument("--rul-alert-below", type=float, help="a RUL below this opens a 'rul' alert on the stream")
    b.add_argument("--rul-features", metavar="F1,F2", help="RUL regressor inputs (default: the gates' and the "
                   "classifier's features; on the simulator's run-to-failure file also 'regime')")
    b.add_argument("--kind", choices=["dense", "lstm"], default="dense",
                   help="the gates' model: a dense autoencoder over one reading, or an LSTM autoencoder over a "
                        "window of consecutive readings (in --time-column order, per --unit-column)")
    b.add_argument("--modality-kind", action="append", metavar="NAME=dense|lstm",
                   help="this modality's model, overriding --kind (repeatable): dense and sequence gates in one "
                        "bundle")
    b.add_argument("--window-steps", type=int, default=30, help="readings per window (--kind lstm)")
    b.add_argument("--centre-windows", action="store_true",
                   help="--kind lstm: judge how readings move within each window, not their level (a slow drift "
                        "is then no anomaly; a fault that only shifts the level is missed once it fills the window)")
    b.add_argument("--hidden", metavar="W1,W2", help="autoencoder encoder widths for every modality "
                   "(--kind lstm: the first is the LSTM's hidden size)")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--epochs", type=int, default=60)
    b.add_argument("--root", type=Path, help="bundle root (default SERVE_ML_ROOT)")
    b.set_defaults(func=_build)

    r = bsub.add_parser("run-to-failure", help="write simulated run-to-failure trajectories as a CSV")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--units", type=int, default=40)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_run_to_failure)

    tr = bsub.add_parser("train", help="build a new version of a bundle from the readings the stream stored "
                         "(it goes live only when activated)")
    tr.add_argument("equipment_id")
    tr.add_argument("power")
    tr.add_argument("--start", required=True, help="first reading time, ISO-8601 with a timezone")
    tr.add_argument("--end", required=True, help="end of the range (exclusive), ISO-8601 with a timezone")
    tr.add_argument("--model-version", help="default: the live version's next minor release")
    tr.add_argument("--epochs", type=int, default=60)
    tr.add_argument("--root", type=Path, help="bundle root (default SERVE_ML_ROOT)")
    tr.set_defaults(func=_train)

    rp = bsub.add_parser("report", help="write a self-contained HTML page (and PNGs) of a bundle's held-out figures")
    rp.add_argument("bundle", type=Path, help="bundle directory <root>/<equipment>/<power>/<version>")
    rp.add_argument("--out", type=Path, help="output directory (default: ./report-<equipment>-<power>-<version>)")
    rp.set_defaults(func=_report)

    e = bsub.add_parser("evaluate", help="score a labelled CSV with one bundle; print precision/recall/F1")
    e.add_argument("bundle", type=Path, help="bundle directory <root>/<equipment>/<power>/<version>")
    e.add_argument("--csv", type=Path, required=True)
    e.add_argument("--label-column")
    e.add_argument("--normal-label")
    e.add_argument("--sep")
    e.add_argument("--unit-column", help="run-to-failure data: the unit column (with --time-column, gives RUL "
                   "figures for a bundle with a RUL head)")
    e.add_argument("--time-column", help="run-to-failure data: the time or cycle column")
    e.add_argument("--json", action="store_true", help="one JSON object, for machines")
    e.set_defaults(func=_evaluate)


def _threshold_rule(args: argparse.Namespace) -> Any:
    from serve_ml.bundles.thresholds import Quantile, parse_rule

    if args.threshold_rule and args.threshold_quantile is not None:
        raise ValueError("give --threshold-rule or --threshold-quantile, not both")
    if args.threshold_rule:
        return parse_rule(args.threshold_rule)
    return Quantile(q=args.threshold_quantile) if args.threshold_quantile is not None else Quantile()


def _parse_derived(items: list[str]) -> list[Any]:
    from serve_ml.bundles.derived import DerivedFeature

    out = []
    for item in items:
        name, _, expr = item.partition("=")
        op, _, inputs = expr.partition(":")
        out.append(DerivedFeature(name=name, op=op, inputs=inputs.split(",")))  # type: ignore[arg-type]
    return out


def _build(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from serve_ml.bundles.builder import BuildSpec, build_bundle
    from serve_ml.bundles.datasets import (
        AI4I_CLASSIFIER_FEATURES,
        AI4I_DERIVED,
        DatasetError,
        csv_header,
        file_sha256,
        is_ai4i,
        read_ordering,
        read_training_csv,
    )
    from serve_ml.bundles.demo import TORQUE_SPEED
    from serve_ml.bundles.derived import raw_inputs
    from serve_ml.bundles.manifest import PowerFromFeature
    from serve_ml.bundles.rul_training import RulSpec
    from serve_ml.bundles.run_to_failure import MODALITIES as RTF_MODALITIES
    from serve_ml.bundles.run_to_failure import SENSORS as RTF_SENSORS
    from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        lo, hi = (float(x) for x in args.power_range_kw.split(","))
        mods = ({m.split("=", 1)[0]: m.split("=", 1)[1].split(",") for m in args.modality} if args.modality
                else None)
        derived = _parse_derived(args.derived or [])
    except (ValueError, IndexError, ValidationError) as exc:
        return fail(f"bad option: {exc}")
    ai4i = False
    if args.csv:
        if not args.csv.is_file():
            return fail(f"{args.csv}: no such file")
        ai4i = is_ai4i(csv_header(args.csv, args.sep)) and args.label_column is None
    rtf = bool(args.csv) and set(RTF_SENSORS) <= set(csv_header(args.csv, args.sep))
    if mods is None:
        mods = (dict(RTF_MODALITIES) if rtf
                else {"thermal": list(THERMAL), "mechanical": ["speed_rpm", "torque_nm", "tool_wear_min"]} if args.csv
                else {"thermal": list(THERMAL), "mechanical": list(MECHANICAL)})
    rul_feats = (args.rul_features.split(",") if args.rul_features
                 else [*RTF_SENSORS, "regime"] if rtf and args.rul else None)
    if ai4i and not args.derived:
        derived = list(AI4I_DERIVED)
    clf_feats = (args.classifier_features.split(",") if args.classifier_features
                 else list(AI4I_CLASSIFIER_FEATURES) if ai4i else None)
    if args.classifier_only:
        if args.no_classifier:
            return fail("--classifier-only and --no-classifier contradict each other")
        clf_feats = clf_feats or list(dict.fromkeys(f for fs in mods.values() for f in fs))
        mods = {}
    derived_names = {d.name for d in derived}
    wanted = [f for f in dict.fromkeys([*(f for fs in mods.values() for f in fs), *(clf_feats or []),
                                        *raw_inputs(derived)]) if f not in derived_names]
    if args.power_feature:
        wanted.append(args.power_feature)
    wanted += [f for f in rul_feats or [] if f not in wanted and f not in derived_names]
    try:
        ordering = None
        if args.csv:
            cols, labels = read_training_csv(args.csv, sep=args.sep, label_column=args.label_column,
                                             normal_label=args.normal_label, columns=wanted)
            data, sha = args.csv.name, file_sha256(args.csv)
            if args.time_column or args.unit_column:
                ordering = read_ordering(args.csv, sep=args.sep, time_column=args.time_column,
                                         unit_column=args.unit_column)
        elif args.time_column or args.unit_column:
            return fail("--time-column and --unit-column read a --csv file")
        else:
            cols, labels = simulate_dataset(4000, 300, spec=MachineSpec.for_power(args.power), seed=args.seed)
            data, sha = f"simulator:{args.power}:seed={args.seed}", None
    except DatasetError as exc:
        return fail(str(exc))
    missing = sorted(set(wanted) - set(cols))
    if missing:
        return fail(f"training data has no column(s) {missing}")
    power_source: Any = (PowerFromFeature(feature=args.power_feature) if args.power_feature
                         else TORQUE_SPEED if {"torque_nm", "speed_rpm"} <= set(cols) else None)
    hidden = [int(w) for w in args.hidden.split(",")] if args.hidden else None
    try:
        modality_kinds = {n: KIND_NAMES[k] for n, _, k in (m.partition("=") for m in args.modality_kind or [])}
    except KeyError as exc:
        return fail(f"--modality-kind: unknown kind {exc}; use dense or lstm")
    if args.rul and not (args.unit_column and args.time_column):
        return fail("--rul needs run-to-failure data: --unit-column and --time-column")
    split: Any = args.split or ("unit" if args.unit_column else "time" if args.time_column else "random")
    if (split == "time" and not args.time_column) or (split == "unit" and not args.unit_column):
        return fail(f"--split {split} needs --{split}-column")
    try:
        rule = _threshold_rule(args)
    except (ValueError, ValidationError) as exc:
        return fail(f"--threshold-rule: {exc}")
    try:
        spec = BuildSpec(equipment_id=args.equipment_id, power=args.power, model_version=args.model_version,
                         power_range_kw=(lo, hi), default_power=args.default_power, power_source=power_source,
                         modalities=mods, classifier=not args.no_classifier, seed=args.seed, epochs=args.epochs,
                         classifier_mode=args.classifier_mode, classifier_rounds=args.classifier_rounds,
                         derived=derived, classifier_features=clf_feats, batch_size=args.batch_size,
                         threshold_rule=rule, cascade=args.cascade, split=split,
                         kind=KIND_NAMES[args.kind], modality_kinds=modality_kinds,
                         window_steps=args.window_steps, centre_windows=args.centre_windows,
                         rul=RulSpec(cap=args.rul_cap or None, unit=args.rul_unit, alert_below=args.rul_alert_below,
                                     features=rul_feats) if args.rul else None,
                         hidden={m: hidden for m in mods} if hidden else {})
    except ValidationError as exc:
        return fail(f"bad build options: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
    root = (args.root or args.settings.root).resolve()
    try:
        path, metrics = build_bundle(spec, cols, labels, root, data=data, data_sha256=sha, ordering=ordering)
    except FileExistsError:
        return fail(f"{args.equipment_id}/{args.power}/{args.model_version} already exists under {root}; "
                    "bundles are immutable: pass a new --model-version")
    except ValueError as exc:
        return fail(str(exc))
    print(json.dumps({"path": str(path), "metrics": metrics}, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from serve_ml.bundles.datasets import AI4I_COLUMNS, DatasetError, csv_header, is_ai4i, read_training_csv
    from serve_ml.bundles.evaluate import evaluate, format_report

    bundle = _load(args.bundle)
    if bundle is None:
        return 2
    try:
        header = csv_header(args.csv, args.sep)
        # only the columns the bundle reads are parsed (an AI4I file is mapped to its feature names)
        have = ({*AI4I_COLUMNS.values(), "type_code"} if is_ai4i(header) and args.label_column is None
                else set(header))
        cols, labels = read_training_csv(args.csv, sep=args.sep, label_column=args.label_column,
                                         normal_label=args.normal_label,
                                         columns=sorted(bundle.known_features & have))
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ordering = None
    if args.unit_column or args.time_column:
        from serve_ml.bundles.datasets import read_ordering

        try:
            ordering = read_ordering(args.csv, sep=args.sep, time_column=args.time_column,
                                     unit_column=args.unit_column)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        report = evaluate(bundle, cols, labels, ordering=ordering)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["bundle"] = "/".join(bundle.key)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _run_to_failure(args: argparse.Namespace) -> int:
    from serve_ml.bundles.run_to_failure import simulate_fleet, write_csv

    fleet = simulate_fleet(args.units, seed=args.seed)
    path = write_csv(fleet, args.out)
    print(f"wrote {path}: {args.units} units, {len(fleet.unit)} rows (unit, cycle, regime, sensors, failure_mode)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from serve_ml.bundles.report import write_report

    bundle = _load(args.bundle)
    if bundle is None:
        return 2
    out = args.out or Path(f"report-{'-'.join(bundle.key)}")
    page = write_report(bundle, out)
    print(f"wrote {page} ({len(list(out.glob('*.png')))} figures)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from serve_ml.cli.state import read_state
    from serve_ml.core.errors import ServeMLError
    from serve_ml.scoring.training import TrainRequest, train_from_store

    s = args.settings
    running = ((read_state(s) or {}).get("stream") or {}).get("database_url", "")
    url = s.database_url or (running if running and "***" not in running else None)
    if url is None:
        print("error: no database: set DATABASE_URL, or run `serve-ml up` (whose database it then reads)",
              file=sys.stderr)
        return 2
    try:
        req = TrainRequest(equipment_id=args.equipment_id, power=args.power, start=args.start, end=args.end,
                           model_version=args.model_version, epochs=args.epochs)
        result = train_from_store(req, url, (args.root or s.root).resolve(),
                                  lambda msg: print(msg, file=sys.stderr, flush=True),
                                  lambda live: _keep_live(s, url, req.equipment_id, req.power, live))
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except ServeMLError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    print(f"{result['path']} is not live: activate it with `serve-ml bundle activate {req.equipment_id} "
          f"{req.power} {result['model_version']}`", file=sys.stderr)
    return 0


def _keep_live(s: Any, database_url: str, eq: str, power: str, live: str) -> str:
    """Pin what is live, so the version being trained waits for an activation: on the
    running system through its API, else in the database its next start reads."""
    import asyncio

    import httpx

    from serve_ml.cli.state import read_state
    from serve_ml.scoring.training import pin_in_database

    reason = "serve-ml bundle train: kept live until the new version is activated"
    base = (read_state(s) or {}).get("http_url")
    if base:
        headers = {"Authorization": f"Bearer {s.admin_secret()}"}
        api = f"{base}/api/v1/serve-ml"
        listed = httpx.get(f"{api}/bundles", params={"equipment_id": eq, "power": power}, headers=headers,
                           timeout=60).json()
        serving = next((b for b in listed.get("bundles", []) if b["live"]), None)
        version = serving["model_version"] if serving else live
        r = httpx.post(f"{api}/bundles/{eq}/{power}/activate", headers=headers, timeout=120,
                       json={"model_version": version, "pin": True, "reason": reason})
        if r.status_code != 200:
            raise SystemExit(f"error: could not pin {eq}/{power}/{version} on the running system: {r.text[:300]}")
        return f"pinned {eq}/{power}/{version} on the running system"
    asyncio.run(pin_in_database(database_url, eq, power, live, reason))
    return f"pinned {eq}/{power}/{live} in the database (the next start keeps it live)"


def _load(path: Path) -> Any:
    """The bundle at ``path`` (its root three levels up), or None after saying why not."""
    from serve_ml.bundles.loader import load_bundle
    from serve_ml.core.errors import BundleInvalid

    path = path.resolve()
    try:
        return load_bundle(path, path.parents[2])
    except (BundleInvalid, IndexError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return None
