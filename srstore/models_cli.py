"""srstore models: the admin API's model versions from a shell (token: SRSTORE_ADMIN_TOKEN)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from srstore.client import (
    ApiClient,
    CommandFailed,
    add_client_arguments,
    client_arguments,
    emit,
    table,
)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = client_arguments()
    models = commands.add_parser(
        "models",
        help="list, upload, activate or roll back model versions",
        description="The admin API's model versions. The token is SRSTORE_ADMIN_TOKEN.",
    )
    add_client_arguments(models)
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="every version, and which one is active")
    actions.add_parser("history", parents=[common], help="every swap, oldest first")
    upload = actions.add_parser(
        "upload",
        parents=[common],
        help="upload a weight file and its model card",
        description="Upload a weight file; the API loads it, scores it on the canary set and "
        "keeps it only if it passes. It is not activated.",
    )
    upload.add_argument("weights", type=Path, help="the weight file (.pt)")
    upload.add_argument(
        "card", type=Path, nargs="?", help="its JSON card (default: the .json beside the weights)"
    )
    upload.add_argument("--version", type=int, help="register it as this version (card's if unset)")
    activate = actions.add_parser(
        "activate", parents=[common], help="activate a version across the fleet"
    )
    activate.add_argument("name", help="espcn or srcnn")
    activate.add_argument("version", type=int, help="the version number, e.g. 2")
    activate.add_argument(
        "--force", action="store_true", help="even if it scores worse on the canary set"
    )
    actions.add_parser(
        "rollback", parents=[common], help="back to the version active before the last swap"
    )


def run(args: argparse.Namespace, api: ApiClient) -> int:
    if args.action == "list":
        emit(args, api.request("GET", "/v1/admin/models").json(), _versions)
    elif args.action == "history":
        emit(args, api.request("GET", "/v1/admin/models/history").json(), _swaps)
    elif args.action == "upload":
        files, card = _upload_parts(args)
        answer = api.request("POST", "/v1/admin/models", files=files, data={"card": card})
        emit(args, answer.json(), lambda a: f"uploaded {a['name']}:{a['version']} (not active)")
    elif args.action == "activate":
        body = {"name": args.name, "version": args.version, "force": args.force}
        emit(args, api.request("PUT", "/v1/admin/models/active", json=body).json(), _swapped)
    else:
        emit(args, api.request("POST", "/v1/admin/models/rollback").json(), _swapped)
    return 0


def _upload_parts(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    card_path = args.card or args.weights.with_suffix(".json")
    try:
        weights = args.weights.read_bytes()
        card = json.loads(card_path.read_text())
    except OSError as exc:
        raise CommandFailed(f"{exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandFailed(f"{card_path} is not a JSON card: {exc}") from None
    if args.version is not None:
        card["version"] = args.version
    return {"weights": (args.weights.name, weights)}, json.dumps(card)


def _versions(overview: dict[str, Any]) -> str:
    rows = []
    for model in overview["models"]:
        card = model["card"]
        held_out = card.get("evaluation", {}).get("mean", {}).get("gain_db")
        canary = card.get("canary", {})
        rows.append(
            [
                "*" if model["active"] else "",
                f"{model['name']}:{model['version']}",
                card.get("parameters", ""),
                "" if "model_psnr" not in canary else f"{canary['model_psnr']:.2f} dB",
                "" if "gain_db" not in canary else f"{canary['gain_db']:+.2f} dB",
                "" if held_out is None else f"{held_out:+.2f} dB",
            ]
        )
    # The figures' names and definitions are the README's ("Model versions and the admin API"),
    # the console's and the cards' alike.
    headers = ["active", "model", "parameters", "canary Y-PSNR", "canary gain", "held-out gain"]
    return table(rows, headers) if rows else "no model versions registered"


def _swaps(history: dict[str, Any]) -> str:
    rows = [
        [s.get("at", ""), s["action"], s.get("from_label") or "-", s["to_label"], s.get("forced")]
        for s in history["swaps"]
    ]
    return table(rows, ["when", "action", "from", "to", "forced"]) if rows else "no swaps yet"


def _swapped(answer: dict[str, Any]) -> str:
    active = f"{answer['active']['name']}:{answer['active']['version']}"
    if not answer["changed"]:
        return f"{active} was already active"
    swap = answer["swap"]
    return f"active: {active} (was {swap.get('from_label') or 'none'}, {swap['action']})"
