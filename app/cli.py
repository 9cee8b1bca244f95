"""The ``srstore`` command: ``serve`` the API, ``train`` a model, manage ``models``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from app import models_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="srstore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (settings from SRSTORE_*)")
    serve.add_argument("--host", help="bind address (default SRSTORE_HOST)")
    serve.add_argument("--port", type=int, help="port (default SRSTORE_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
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
    from app.settings import Settings

    settings = Settings()
    if args.command == "models":
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        return models_cli.run(args, token)
    uvicorn.run(
        "app.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
