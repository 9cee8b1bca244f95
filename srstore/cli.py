"""The ``srstore`` command: ``serve`` the API, run a ``worker``, ``train``, manage ``models``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from srstore import models_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="srstore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (settings from SRSTORE_*)")
    serve.add_argument("--host", help="bind address (default SRSTORE_HOST)")
    serve.add_argument("--port", type=int, help="port (default SRSTORE_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    worker = commands.add_parser("worker", help="run an inference worker (queue mode)")
    worker.add_argument("--name", help="consumer name in the group (default host-pid)")
    commands.add_parser(
        "train", help="the offline trainer (see `srstore train --help`)", add_help=False
    )
    models_cli.add_commands(commands)
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "train":
        from trainer.cli import main as train_main

        return train_main(rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    from config.settings import Settings

    settings = Settings()
    if args.command == "models":
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        return models_cli.run(args, token)
    if args.command == "worker":
        import asyncio

        from worker.main import default_name
        from worker.main import serve as serve_worker

        asyncio.run(serve_worker(settings, args.name or default_name()))
        return 0
    with _multiprocess_metrics(args.workers):
        uvicorn.run(
            "app.main:app",
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
        )
    return 0


@contextlib.contextmanager
def _multiprocess_metrics(workers: int) -> Iterator[None]:
    """Let /metrics merge every worker's samples (prometheus-client's multiprocess mode).

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when set, emptied of a previous run's files, else a
    temporary directory when there is more than one worker. Must run before the app imports
    prometheus-client.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        Path(configured).mkdir(parents=True, exist_ok=True)
        for stale in Path(configured).glob("*.db"):
            stale.unlink()
        yield
    elif workers > 1:
        with tempfile.TemporaryDirectory(prefix="srstore-metrics-") as temporary:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = temporary
            yield
    else:
        yield


if __name__ == "__main__":
    sys.exit(main())
