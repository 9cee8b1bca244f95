"""srstore images: upload, fetch, describe and delete images through the API, without curl."""

from __future__ import annotations

import argparse
import mimetypes
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

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = client_arguments()
    images = commands.add_parser(
        "images",
        help="upload, get, describe or delete images",
        description="The image API from a shell.",
    )
    add_client_arguments(images)
    actions = images.add_subparsers(dest="action", required=True)
    upload = actions.add_parser("upload", parents=[common], help="store one or more images")
    upload.add_argument("files", type=Path, nargs="+", help="image files")
    upload.add_argument("-q", "--quiet", action="store_true", help="print only the ids, one a line")
    get = actions.add_parser(
        "get", parents=[common], help="fetch an image at full size, rebuilt by the model"
    )
    get.add_argument("id", help="the image's id, as upload printed it")
    get.add_argument(
        "-o", "--output", type=Path, help="where to write it (default: ID.EXT in this folder)"
    )
    get.add_argument(
        "--format", choices=["jpeg", "png", "webp"], help="output format (default: the upload's)"
    )
    get.add_argument("--quality", type=int, help="JPEG/WebP quality, 1-100")
    meta = actions.add_parser("meta", parents=[common], help="what srstore knows of an image")
    meta.add_argument("id", help="the image's id, as upload printed it")
    delete = actions.add_parser(
        "delete", parents=[common], help="delete an image and its cached renditions"
    )
    delete.add_argument("id", help="the image's id, as upload printed it")


def run(args: argparse.Namespace, api: ApiClient) -> int:
    if args.action == "upload":
        uploaded = [_upload(api, path) for path in args.files]
        if args.quiet:
            print("\n".join(meta["id"] for _, meta in uploaded))
        else:
            emit(args, [meta for _, meta in uploaded], lambda _: _uploads_table(uploaded))
    elif args.action == "get":
        _get(args, api)
    elif args.action == "meta":
        emit(args, api.request("GET", f"/v1/images/{args.id}/meta").json(), _meta_table)
    else:
        api.request("DELETE", f"/v1/images/{args.id}")
        emit(args, {"deleted": args.id}, lambda _: f"deleted {args.id}")
    return 0


def _upload(api: ApiClient, path: Path) -> tuple[Path, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandFailed(f"{path}: {exc.strerror}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    answer = api.request("POST", "/v1/images", files={"file": (path.name, data, content_type)})
    return path, answer.json()


def _uploads_table(uploaded: list[tuple[Path, dict[str, Any]]]) -> str:
    rows = [
        [
            meta["id"],
            str(path),
            f"{meta['width']}x{meta['height']}",
            meta["original_bytes"],
            meta["stored_bytes"],
            f"{meta['original_bytes'] / max(meta['stored_bytes'], 1):.1f}x",
            (meta.get("receipt") or {}).get("state", ""),
        ]
        for path, meta in uploaded
    ]
    return table(rows, ["id", "file", "size", "uploaded bytes", "stored bytes", "saved", "receipt"])


def _get(args: argparse.Namespace, api: ApiClient) -> None:
    params = {k: v for k, v in (("format", args.format), ("quality", args.quality)) if v}
    answer = api.request("GET", f"/v1/images/{args.id}", params=params)
    media_type = answer.headers.get("content-type", "").split(";")[0]
    output = args.output or Path(args.id + _EXTENSIONS.get(media_type, ""))
    try:
        output.write_bytes(answer.content)
    except OSError as exc:
        raise CommandFailed(f"{output}: {exc.strerror}") from None
    written = {
        "path": str(output),
        "bytes": len(answer.content),
        "content_type": media_type,
        "cache": answer.headers.get("x-cache"),
        "model": answer.headers.get("x-model-version"),
    }
    emit(
        args,
        written,
        lambda w: (
            f"wrote {w['path']} ({w['bytes']} bytes, {w['content_type']}, "
            f"cache {w['cache']}, model {w['model']})"
        ),
    )


def _meta_table(meta: dict[str, Any]) -> str:
    """One row a field; the quality receipt one row a field of its own, its state first."""
    rows: list[list[Any]] = [[key, value] for key, value in meta.items() if key != "receipt"]
    receipt = meta.get("receipt") or {}
    rows += [[f"receipt {key}", value] for key, value in receipt.items() if value is not None]
    return table(rows, ["field", "value"])
