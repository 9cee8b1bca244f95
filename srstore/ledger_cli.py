"""srstore ledger reconcile: recount the storage ledger from the object store.

Unlike the commands that talk to a running API, it reaches the store and the ledger itself
(the same SRSTORE_* settings as ``srstore serve``): after a Redis failover, a restore, or a
move to a new Redis, the ledger is what the store holds, not what Redis remembers.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from srstore.client import emit, table

if TYPE_CHECKING:
    from config.settings import Settings
    from ledger import Totals


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = commands.add_parser("ledger", help="the storage ledger (bytes saved)")
    actions = ledger.add_subparsers(dest="action", required=True, metavar="ACTION")
    recount = actions.add_parser(
        "reconcile",
        help="recount the ledger from the object store's listing",
        description="List every image in the object store, add up its metadata by"
        " representation, and move the ledger by the difference (see render/recount.py for"
        " what uploads during the recount do).",
    )
    recount.add_argument("--dry-run", action="store_true", help="count and compare, change nothing")
    recount.add_argument("--json", action="store_true", help="the figures as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    result = asyncio.run(_reconcile(settings, apply=not args.dry_run))
    emit(args, result, render)
    return 0


async def _reconcile(settings: Settings, apply: bool) -> dict[str, Any]:
    """The store and ledger modules load here, so the other commands start without them."""
    from ledger import make_ledger
    from render.recount import reconcile
    from storage import make_store

    store, ledger = make_store(settings), make_ledger(settings)
    try:
        done = await reconcile(store, ledger, apply)
    finally:
        close = getattr(ledger, "close", None)
        if close is not None:
            await close()
    return {
        "applied": apply,
        "before": _figures(done.before),
        "counted": _figures(done.counted),
        "after": _figures(done.after),
    }


def _figures(totals: Totals) -> dict[str, Any]:
    return {
        "images": totals.images,
        "original_bytes": totals.original_bytes,
        "stored_bytes": totals.stored_bytes,
        "by_representation": {k: asdict(v) for k, v in sorted(totals.by_representation.items())},
    }


def render(result: dict[str, Any]) -> str:
    rows = [
        [name, f["images"], f["original_bytes"], f["stored_bytes"]]
        for name, f in ((n, result[n]) for n in ("before", "counted", "after"))
    ]
    note = "" if result["applied"] else "\n(dry run: the ledger was not changed)"
    return table(rows, ["ledger", "images", "original bytes", "stored bytes"]) + note
