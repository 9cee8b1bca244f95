"""``srstore models ...``: the admin API from a shell (token from ``SRSTORE_ADMIN_TOKEN``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="list, upload, activate or roll back models")
    models.add_argument("--url", default="http://127.0.0.1:8000", help="the srstore API")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version, and which one is active")
    actions.add_parser("history", help="every swap")
    upload = actions.add_parser("upload", help="upload a weight file and its model card")
    upload.add_argument("weights", type=Path)
    upload.add_argument("card", type=Path, help="JSON card with at least name and version")
    activate = actions.add_parser("activate", help="activate a version across the fleet")
    activate.add_argument("name")
    activate.add_argument("version", type=int)
    activate.add_argument("--force", action="store_true", help="even if it scores worse")
    actions.add_parser("rollback", help="back to the previously active version")


def run(args: argparse.Namespace, token: str | None) -> int:
    """Print the API's JSON answer; exit 1 on an error answer."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=120) as http:
        response = _call(http, args)
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1


def _call(http: httpx.Client, args: argparse.Namespace) -> httpx.Response:
    if args.action == "list":
        return http.get("/v1/admin/models")
    if args.action == "history":
        return http.get("/v1/admin/models/history")
    if args.action == "upload":
        files = {"weights": (args.weights.name, args.weights.read_bytes())}
        return http.post("/v1/admin/models", files=files, data={"card": args.card.read_text()})
    if args.action == "activate":
        body = {"name": args.name, "version": args.version, "force": args.force}
        return http.put("/v1/admin/models/active", json=body)
    return http.post("/v1/admin/models/rollback")
