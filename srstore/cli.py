"""The srstore command: serve the API, run workers, train, manage images and models, check."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from srstore import costs_cli, images_cli, keys_cli, ledger_cli, models_cli
from srstore.client import CommandFailed, api_url, table

if TYPE_CHECKING:
    from config.settings import Settings

# What each command needs is imported where it runs: `srstore --help` and the commands that
# only talk HTTP start without the web app, NumPy, SciPy or torch (tests/test_cli_startup.py).
log = logging.getLogger("srstore")

DESCRIPTION = """\
srstore keeps a 4x-downscaled copy of each image and rebuilds it on read with a
super-resolution network. Every setting is an SRSTORE_* environment variable
(`srstore doctor` checks them and everything they name)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srstore",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="bind address (default: SRSTORE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: SRSTORE_PORT, 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default: 1)"
    )
    worker = commands.add_parser("worker", help="run an inference worker (queue mode)")
    worker.add_argument("--name", help="consumer name in the group (default: HOST-PID)")
    images_cli.add_commands(commands)
    models_cli.add_commands(commands)
    keys_cli.add_commands(commands)
    costs_cli.add_commands(commands)
    ledger_cli.add_commands(commands)
    doctor = commands.add_parser(
        "doctor", help="check the configuration and every service it names"
    )
    doctor.add_argument("--json", action="store_true", help="the checks as JSON, for scripts")
    doctor.add_argument(
        "--url", help="the srstore API to check (default: http://SRSTORE_HOST:SRSTORE_PORT)"
    )
    sign_url = commands.add_parser(
        "sign-url", help="print a rendition URL signed with SRSTORE_URL_SIGNING_KEY"
    )
    sign_url.add_argument("image_id")
    sign_url.add_argument("options", nargs="*", help="name=value, e.g. w=300 h=200 fit=cover")
    commands.add_parser("train", help="the offline trainer (srstore train --help)", add_help=False)
    return parser


# How a shell reports a process that SIGPIPE ended (`srstore models list | head -1`).
CLOSED_PIPE_STATUS = 128 + 13


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that closed the pipe ends it quietly, as it would `cat`."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print a traceback
    except BrokenPipeError:
        # Python's advice: point stdout at devnull so that the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE_STATUS
    return status


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        from trainer.cli import main as train_main

        return train_main(rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command == "doctor":
        return _doctor(args)
    from config.logs import configure_logging
    from config.settings import SettingsError, load_settings

    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return _run(args, settings)
    except CommandFailed as exc:
        print(f"srstore: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "keys":
        return keys_cli.run(args, settings)
    if args.command in ("images", "models", "costs"):
        from srstore.client import ApiClient

        api = ApiClient(api_url(args, settings.host, settings.port), _credential(args, settings))
        try:
            commands = {"images": images_cli, "models": models_cli, "costs": costs_cli}
            return commands[args.command].run(args, api)
        finally:
            api.close()
    if args.command == "ledger":
        return ledger_cli.run(args, settings)
    if args.command == "sign-url":
        return _print_signed_url(settings, args.image_id, args.options)
    if args.command == "worker":
        import asyncio

        from config.settings import unknown_variables
        from worker.main import default_name
        from worker.main import serve as serve_worker

        for problem in unknown_variables(os.environ):
            log.warning("%s: ignored", problem)
        asyncio.run(serve_worker(settings, args.name or default_name()))
        return 0
    import functools

    import uvicorn

    from app.server import DeadlineH11Protocol

    protocol = functools.partial(
        DeadlineH11Protocol,
        header_timeout=settings.http_header_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
    )
    with _multiprocess_metrics(args.workers):
        uvicorn.run(
            "app.main:app",
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            http=protocol,  # type: ignore[arg-type]
            log_config=None,  # app.main configures logging from SRSTORE_LOG_FORMAT
        )
    return 0


def _credential(args: argparse.Namespace, settings: Settings) -> str | None:
    """--key, else SRSTORE_KEY, else the bootstrap admin token, else none (loopback)."""
    if getattr(args, "key", None):
        return str(args.key)
    for secret in (settings.key, settings.admin_token):
        if secret is not None:
            return secret.get_secret_value()
    return None


def _print_signed_url(settings: Settings, image_id: str, options: list[str]) -> int:
    from urllib.parse import urlencode

    from app.services.renditions import SIGNATURE_PARAM, sign

    if settings.url_signing_key is None:
        raise CommandFailed("SRSTORE_URL_SIGNING_KEY is not set")
    pairs = [(name, value) for name, _, value in (option.partition("=") for option in options)]
    signature = sign(settings.url_signing_key.get_secret_value(), image_id, pairs)
    print(f"/v1/images/{image_id}?{urlencode([*pairs, (SIGNATURE_PARAM, signature)])}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from srstore import doctor

    checks = doctor.diagnose(os.environ, args.url)
    if args.json:
        import json

        print(json.dumps(doctor.as_json(checks), indent=2))
    else:
        print(table([[c.what, c.status, c.detail] for c in checks], ["check", "status", "detail"]))
    return 1 if doctor.failed(checks) else 0


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
