"""``serve-ml``: one console command with subcommands (see ``serve-ml --help``)."""

from __future__ import annotations

import argparse
import sys

from serve_ml import __version__
from serve_ml.cli import bench, bundle, cluster, scale, stream
from serve_ml.core.settings import Settings
from serve_ml.core.tracing import configure_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serve-ml", description="Predictive-maintenance model serving on Ray Serve.")
    p.add_argument("--version", action="version", version=f"serve-ml {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    bundle.register(sub)
    cluster.register(sub)
    stream.register(sub)
    scale.register(sub)
    bench.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The one Settings of this process, read from the environment here and passed down.
    args.settings = Settings()
    configure_logging(args.settings.log_format)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
