"""srstore keys: create, list and revoke API keys in the configured key store.

These commands write the key store directly (SQLite beside the local ledger, or Redis), as
``redis-cli ACL SETUSER`` does for Redis: that is how the first key is made on a fleet that
has none. ``POST /v1/admin/keys`` does the same over HTTP for an admin.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from srstore.client import CommandFailed, emit, table

if TYPE_CHECKING:
    from apikeys import KeyStore
    from config.settings import Settings

T = TypeVar("T")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list or revoke API keys",
        description="API keys, written to the configured key store (see README, Keys and access).",
    )
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints its secret once")
    create.add_argument(
        "--scopes", required=True, help="comma-separated, of: read, upload, list, delete, admin"
    )
    create.add_argument("--tenant", default="default", help="owner of its uploads")
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument(
        "--costly-options", action="store_true", help="may ask uploads for policy= and floor="
    )
    create.add_argument("--uploads-per-minute", type=int, help="override the quota setting")
    create.add_argument("--upload-bytes-per-day", type=int, help="override the quota setting")
    create.add_argument("--cpu-seconds-per-hour", type=float, help="override the quota setting")
    create.add_argument("--json", action="store_true", help='{"id", "key", "scopes", "tenant"}')
    listing = actions.add_parser("list", help="every key (never a secret)")
    listing.add_argument("--json", action="store_true", help="as JSON, for scripts")
    revoke = actions.add_parser("revoke", help="revoke a key (refused fleet-wide within seconds)")
    revoke.add_argument("id", help="the key's id, as create or list printed it")
    revoke.add_argument("--json", action="store_true", help="as JSON, for scripts")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from apikeys import make_key_store  # the Redis client only for this command

    store = make_key_store(settings)
    if args.action == "create":
        _create(args, store)
    elif args.action == "list":
        records = _await(store, store.all)
        emit(args, [r.public() for r in records], _keys_table)
    else:
        if _await(store, lambda: store.revoke(args.id)) is None:
            raise CommandFailed(f"no key with id {args.id!r}")
        emit(args, {"revoked": args.id}, lambda _: f"revoked {args.id}")
    return 0


def _create(args: argparse.Namespace, store: KeyStore) -> None:
    from apikeys import InvalidKeySpec, Limits, mint

    limits = Limits(args.uploads_per_minute, args.upload_bytes_per_day, args.cpu_seconds_per_hour)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        key, record = mint(scopes, args.tenant, args.name, args.costly_options, limits)
    except InvalidKeySpec as exc:
        raise CommandFailed(str(exc)) from None
    _await(store, lambda: store.add(record))
    created = {"id": record.id, "key": key, "scopes": list(record.scopes), "tenant": record.tenant}
    emit(
        args,
        created,
        lambda c: (
            f"{c['key']}\n"
            f"key {c['id']} for tenant {c['tenant']}, scopes {','.join(c['scopes'])}: "
            "this is the only time the key is shown"
        ),
    )


def _await(store: KeyStore, action: Callable[[], Awaitable[T]]) -> T:
    from apikeys import KeyStoreUnavailable

    async def run() -> T:
        try:
            return await action()
        except KeyStoreUnavailable as exc:
            raise CommandFailed(str(exc)) from None
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                await close()

    return asyncio.run(run())


def _keys_table(records: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["id"],
            r["tenant"],
            ",".join(r["scopes"]),
            r["name"],
            _when(r["created_at"]),
            _when(r["revoked_at"]) if r["revoked_at"] else "",
        ]
        for r in records
    ]
    return table(rows, ["id", "tenant", "scopes", "name", "created", "revoked"])


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
