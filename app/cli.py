"""The ``srstore`` command: ``serve`` the API, run an inference ``worker``, ``train`` a model."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn


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
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "train":
        from trainer.cli import main as train_main

        return train_main(rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    from app.settings import Settings

    settings = Settings()
    if args.command == "worker":
        import asyncio

        from worker.main import default_name, serve

        asyncio.run(serve(settings, args.name or default_name()))
        return 0
    uvicorn.run(
        "app.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
