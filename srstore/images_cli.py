"""srstore images: upload, fetch, describe and delete images through the API, without curl."""

from __future__ import annotations

import argparse
import mimetypes
from collections.abc import Iterator
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

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/avif": ".avif",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
}
# Output formats `GET /v1/images/{id}?format=` takes (README, "Sizes, formats and caching").
FORMATS = ["jpeg", "png", "webp", "avif", "bmp", "tiff"]
POLICIES = ["downscale", "guarded", "smallest"]
ID_HELP = "the image's id, as upload printed it (after --, if it starts with -)"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = client_arguments()
    images = commands.add_parser(
        "images",
        help="upload, list, get, describe or delete images",
        description="The image API from a shell.",
    )
    add_client_arguments(images)
    actions = images.add_subparsers(dest="action", required=True)
    upload = actions.add_parser("upload", parents=[common], help="store one or more images")
    upload.add_argument("files", type=Path, nargs="+", help="image files")
    upload.add_argument("-q", "--quiet", action="store_true", help="print only the ids, one a line")
    upload.add_argument(
        "--policy",
        choices=POLICIES,
        help="what to keep: the x4 copy, or a full-size copy where the x4 copy falls below the "
        "floor (guarded), or the fewest bytes that meet it (smallest); "
        "default: the server's SRSTORE_STORAGE_POLICY",
    )
    upload.add_argument(
        "--floor", help="quality floor, ssim:0.9 or psnr:35 (default: SRSTORE_QUALITY_FLOOR)"
    )
    listing = actions.add_parser(
        "list", parents=[common], help="stored images, in id order, a page at a time"
    )
    listing.add_argument(
        "--limit", type=int, default=24, help="images per page, 1-100 (default: 24)"
    )
    listing.add_argument("--cursor", help="the page after this one (printed under a full page)")
    listing.add_argument("--all", action="store_true", help="every page, not just the first")
    get = actions.add_parser(
        "get", parents=[common], help="fetch an image at full size, rebuilt by the model"
    )
    get.add_argument("id", help=ID_HELP)
    get.add_argument(
        "-o", "--output", type=Path, help="where to write it (default: ID.EXT in this folder)"
    )
    get.add_argument("--format", choices=FORMATS, help="output format (default: the upload's)")
    get.add_argument("--quality", type=int, help="JPEG/WebP/AVIF quality, 1-100")
    meta = actions.add_parser("meta", parents=[common], help="what srstore knows of an image")
    meta.add_argument("id", help=ID_HELP)
    delete = actions.add_parser(
        "delete", parents=[common], help="delete an image and its cached renditions"
    )
    delete.add_argument("id", help=ID_HELP)


def run(args: argparse.Namespace, api: ApiClient) -> int:
    if args.action == "upload":
        options = {k: v for k, v in (("policy", args.policy), ("floor", args.floor)) if v}
        uploaded = [_upload(api, path, options) for path in args.files]
        if args.quiet:
            print("\n".join(meta["id"] for _, meta in uploaded))
        else:
            emit(args, [meta for _, meta in uploaded], lambda _: _uploads_table(uploaded))
    elif args.action == "list":
        _list(args, api)
    elif args.action == "get":
        _get(args, api)
    elif args.action == "meta":
        emit(args, api.request("GET", f"/v1/images/{args.id}/meta").json(), _meta_table)
    else:
        api.request("DELETE", f"/v1/images/{args.id}")
        emit(args, {"deleted": args.id}, lambda _: f"deleted {args.id}")
    return 0


def _upload(api: ApiClient, path: Path, options: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandFailed(f"{path}: {exc.strerror}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    answer = api.request(
        "POST", "/v1/images", params=options, files={"file": (path.name, data, content_type)}
    )
    return path, answer.json()


def _list(args: argparse.Namespace, api: ApiClient) -> None:
    """One page (``--cursor`` for the next), or every page with ``--all``."""
    images: list[dict[str, Any]] = []
    cursor = args.cursor
    while True:
        params = {"limit": args.limit, **({"cursor": cursor} if cursor else {})}
        page = api.request("GET", "/v1/images", params=params).json()
        images += page["images"]
        cursor = page.get("next_cursor")
        if not (args.all and cursor):
            break
    emit(args, {"images": images, "next_cursor": cursor}, _images_table)


def _images_table(page: dict[str, Any]) -> str:
    rows = [
        [
            meta["id"],
            f"{meta['width']}x{meta['height']}",
            meta["content_type"],
            meta.get("representation", "x4"),
            meta["original_bytes"],
            meta["stored_bytes"],
            str(meta["created_at"])[:19].replace("T", " "),
        ]
        for meta in page["images"]
    ]
    headers = ["id", "size", "uploaded as", "kept as", "uploaded bytes", "stored bytes", "at"]
    listed = table(rows, headers) if rows else "no images"
    if page["next_cursor"]:
        listed += f"\nmore: srstore images list --cursor {page['next_cursor']}"
    return listed


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
    """One row a field; the receipt's fields as ``receipt.NAME`` rows, scores rounded."""
    return table(list(_rows(meta)), ["field", "value"])


def _rows(fields: dict[str, Any], prefix: str = "") -> Iterator[list[str]]:
    for key, value in fields.items():
        if isinstance(value, dict):
            yield from _rows(value, f"{prefix}{key}.")
        else:
            yield [prefix + key, _readable(key, value)]


def _readable(key: str, value: Any) -> str:
    """Scores as people quote them (33.47 dB, SSIM 0.9135); nothing as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "psnr" and isinstance(value, int | float):
        return f"{value:.2f} dB"
    if key == "psnr" and value == "Infinity":
        return "identical"
    if key == "ssim" and isinstance(value, int | float):
        return f"{value:.4f}"
    return str(value)
