"""``serve-ml bench ...``: benchmarks that print a table and write bench-results/*.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (each prints a table and writes JSON)")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    s = bsub.add_parser("score", help="in-process scoring throughput at batch 1, 64, 4096")
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
    st.add_argument("--consumers", type=int, default=1)
    st.set_defaults(func=_stream)


def _score(args: argparse.Namespace) -> int:
    from serve_ml.bench import score

    rep = score.run(repeats=args.repeats, enable_xgb=args.xgb)
    print(rep.table())
    print(f"wrote {rep.write('score')}")
    return 0


def _http(args: argparse.Namespace) -> int:
    from serve_ml.bench import http

    rep = http.run(repeats=args.repeats, duration_s=args.duration_s)
    print(rep.table())
    print(f"wrote {rep.write('http')}")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from serve_ml.bench import fleet

    rep = fleet.run(n=args.bundles, repeats=args.repeats, duration_s=args.duration_s)
    print(rep.table())
    print(f"wrote {rep.write('fleet')}")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from serve_ml.bench import stream

    rep = stream.run(n=args.readings, rate_hz=args.rate_hz, consumers=args.consumers)
    print(rep.table())
    print(f"wrote {rep.write('stream')}")
    return 0
