"""``serve-ml bench ...``: benchmarks that print a table and write bench-results/*.json."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_ml.bench.stream_fleet import FleetKind


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (each prints a table and writes JSON)")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    s = bsub.add_parser("score", help="in-process scoring throughput at batch 1, 64, 4096; hot-path audit")
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--xgb", action="store_true", help="also run the classifier")
    s.set_defaults(func=_score)
    h = bsub.add_parser("http", help="Serve HTTP vs plain uvicorn vs in-process, 1 and 16 clients, bulk")
    h.add_argument("--repeats", type=int, default=3)
    h.add_argument("--duration-s", type=float, default=5.0)
    h.set_defaults(func=_http)
    f = bsub.add_parser("fleet", help="1,000 equipment bundles: startup, p99 spread vs one, memory")
    f.add_argument("--bundles", type=int, default=1000)
    f.add_argument("--repeats", type=int, default=3)
    f.add_argument("--duration-s", type=float, default=5.0)
    f.set_defaults(func=_fleet)
    st = bsub.add_parser("stream", help="Kafka -> scorer -> PostgreSQL throughput and latency")
    st.add_argument("--readings", type=int, default=100_000)
    st.add_argument("--rate-hz", type=float, default=10_000, help="input rate of the latency phase")
    st.add_argument("--consumers", type=int, default=2, help="scorer actors in the consumer group")
    st.add_argument("--compare-with", type=int, default=1,
                    help="scorer actors of the comparison rounds, alternating with the others (0: none)")
    st.add_argument("--machines", type=int, default=16,
                    help="simulated machines; beyond 4, generated equipment spread over every partition")
    st.add_argument("--ws-clients", type=int, default=0,
                    help="also run each round with this many WebSocket clients on the fleet's live streams")
    kinds = st.add_mutually_exclusive_group()
    kinds.add_argument("--sequence", action="store_true",
                       help="a fleet of sequence bundles (spindle-04's: an LSTM gate over 30 readings, a RUL head), "
                            "every machine running units to failure")
    kinds.add_argument("--cascade", action="store_true",
                       help="12 of the 16 machines on a bundle built for the run with derived features and an "
                            "XGBoost classifier behind the gate (gate_then_classify); the classifier enabled")
    st.add_argument("--no-operations", action="store_true",
                    help="no thresholds, notification sinks or WebSocket clients (the writer still keeps "
                         "status, rollups and alarms)")
    st.add_argument("--in-process-producer", action="store_true",
                    help="produce the latency phase from the bench's own process, which it shares with the API "
                         "server and the clients timing the pushes (for comparison with the default, a process "
                         "of its own)")
    st.set_defaults(func=_stream)
    sq = bsub.add_parser("sequence", help="an LSTM sequence bundle: in process vs plain torch, through Serve")
    sq.add_argument("--repeats", type=int, default=3)
    sq.add_argument("--duration-s", type=float, default=5.0)
    sq.set_defaults(func=_sequence)
    pe = bsub.add_parser("peers", help="the same bundle on serve-ml, MLServer, LitServe, BentoML and FastAPI "
                                       "(each in its own virtualenv, installed by the bench); needs wrk")
    pe.add_argument("--repeats", type=int, default=3)
    pe.add_argument("--duration-s", type=float, default=5.0)
    pe.add_argument("--workers", type=int, default=1,
                    help="worker processes of every server, each the way its docs scale (serve-ml: replicas of "
                         "the ingress and the equipment deployment)")
    pe.add_argument("--peers", default="fastapi,litserve,bentoml,mlserver",
                    help="comma-separated subset of fastapi, litserve, bentoml, mlserver")
    pe.set_defaults(func=_peers)
    sw = bsub.add_parser("swap", help="live-version swaps under steady load")
    sw.add_argument("--swaps", type=int, default=6)
    sw.add_argument("--duration-s", type=float, default=12.0)
    sw.set_defaults(func=_swap)
    so = bsub.add_parser("soak", help="HTTP + stream load for N minutes with swaps and one fault per minute")
    so.add_argument("--minutes", type=float, default=10.0)
    so.add_argument("--http-clients", type=int, default=4, help="single-row clients (half as many bulk)")
    so.add_argument("--rate-hz", type=float, default=50.0, help="stream readings/s per simulated machine (3)")
    so.set_defaults(func=_soak)
    po = bsub.add_parser("portal", help="the portal in chromium: fleet first render with 1,000 equipment, "
                                       "equipment-page live updates per second")
    po.add_argument("--equipment", type=int, default=1000)
    po.add_argument("--repeats", type=int, default=5)
    po.add_argument("--rate-hz", type=float, default=20.0, help="verdict pushes per second to the equipment page")
    po.add_argument("--duration-s", type=float, default=10.0)
    po.set_defaults(func=_portal)
    a = bsub.add_parser("all", help="score, http, fleet, stream and swap, one table each")
    a.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    a.set_defaults(func=_all)


def _print(name: str, rep: object) -> int:
    print(rep.table())  # type: ignore[attr-defined]
    print(f"wrote {rep.write(name)}")  # type: ignore[attr-defined]
    return 0


def _portal(args: argparse.Namespace) -> int:
    from serve_ml.bench.portal import run

    return _print("portal", run(args.equipment, args.repeats, args.rate_hz, args.duration_s))


def _score(args: argparse.Namespace) -> int:
    from serve_ml.bench import score

    return _print("score", score.run(args.settings.root, repeats=args.repeats, enable_xgb=args.xgb))


def _sequence(args: argparse.Namespace) -> int:
    from serve_ml.bench import sequence

    return _print("sequence", sequence.run(repeats=args.repeats, duration_s=args.duration_s))


def _http(args: argparse.Namespace) -> int:
    from serve_ml.bench import http

    return _print("http", http.run(args.settings.root, repeats=args.repeats, duration_s=args.duration_s))


def _peers(args: argparse.Namespace) -> int:
    from serve_ml.bench import peers

    chosen = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    unknown = set(chosen) - set(peers.PEERS)
    if unknown or not chosen:
        raise SystemExit(f"--peers: unknown {sorted(unknown)}; choose from {', '.join(peers.PEERS)}")
    return _print("peers", peers.run(args.settings.root, repeats=args.repeats, duration_s=args.duration_s,
                                     peers=chosen, workers=args.workers, state_dir=args.settings.state_dir))


def _fleet(args: argparse.Namespace) -> int:
    from serve_ml.bench import fleet

    return _print("fleet", fleet.run(args.settings.root, n=args.bundles, repeats=args.repeats, duration_s=args.duration_s))


def _stream(args: argparse.Namespace) -> int:
    from serve_ml.bench import stream

    kind: FleetKind = "sequence" if args.sequence else "cascade" if args.cascade else "dense"
    return _print("stream" if kind == "dense" else f"stream-{kind}", stream.run(
        args.settings.root, n=args.readings, rate_hz=args.rate_hz, consumers=args.consumers,
        compare_with=args.compare_with or None, n_machines=args.machines, operations=not args.no_operations,
        ws_clients=args.ws_clients, fleet_kind=kind, producer_process=not args.in_process_producer))


def _soak(args: argparse.Namespace) -> int:
    import signal

    from serve_ml.bench import soak

    # SIGTERM unwinds like Ctrl-C, so the cluster and embedded services it started are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    return _print("soak", soak.run(args.settings.root, minutes=args.minutes, http_clients=args.http_clients, rate_hz=args.rate_hz))


def _swap(args: argparse.Namespace) -> int:
    from serve_ml.bench import swap

    return _print("swap", swap.run(args.settings.root, swaps=args.swaps, duration_s=args.duration_s))
def _all(args: argparse.Namespace) -> int:
    import time

    from serve_ml.bench import fleet, http, score, stream, swap

    quick, root = args.quick, args.settings.root
    t0 = time.monotonic()
    runs = [("score", lambda: score.run(root, repeats=3)),
            ("http", lambda: http.run(root, repeats=2 if quick else 3, duration_s=4 if quick else 5)),
            ("fleet", lambda: fleet.run(root, repeats=2 if quick else 3, duration_s=4 if quick else 5)),
            ("stream", lambda: stream.run(root, n=50_000 if quick else 100_000)),
            ("swap", lambda: swap.run(root, swaps=4 if quick else 6, duration_s=8 if quick else 12))]
    missed = 0
    for name, fn in runs:
        rep = fn()
        print(rep.table(), flush=True)
        print(f"wrote {rep.write(name)}\n", flush=True)
        missed += sum(1 for f in rep.figures if f.met is False)
    print(f"bench all: {time.monotonic() - t0:.0f}s, {missed} target(s) missed")
    return 0
