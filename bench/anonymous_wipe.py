"""The drill of RELIABILITY.md: an anonymous client lists and deletes every image.

Five images are uploaded from loopback into a fresh embedded store; then a client without a
key, at a remote address and at loopback, lists them and deletes each one it saw; last the
same from loopback after one API key was created. The peer address is set at the ASGI layer.
Prints a table of what the client got and how many images are left. Run it from a source
tree's root to drill that tree's code: ``python -m bench.anonymous_wipe``.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path

import httpx
from fastapi import FastAPI
from PIL import Image
from tabulate import tabulate

from app.main import create_app
from config.settings import Settings

IMAGES = 5
TOKEN = "a-token-for-the-wipe-drill"


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (seed * 40 % 256, 80, 120)).save(buffer, "PNG")
    return buffer.getvalue()


def _client(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://srstore")


async def _drill(address: str, with_key: bool) -> list[object]:
    with tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data), admin_token=TOKEN))  # type: ignore[arg-type]
        async with app.router.lifespan_context(app), _client(app, "127.0.0.1") as owner:
            png = {"content-type": "image/png"}
            ids = [
                (await owner.post("/v1/images", content=_png(i), headers=png)).json()["id"]
                for i in range(IMAGES)
            ]
            keyed = "no key"
            if with_key:
                made = await owner.post(
                    "/v1/admin/keys",
                    json={"scopes": ["upload"]},
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
                # A tree without keys answers 404: the drill says so instead of failing.
                keyed = "a key exists" if made.status_code == 201 else f"keys: {made.status_code}"
            async with _client(app, address) as anonymous:
                listing = await anonymous.get("/v1/images", params={"limit": 100})
                seen = [m["id"] for m in listing.json()["images"]] if listing.is_success else []
                # The ids are known anyway (say, from public image URLs): try every one.
                deletes = [(await anonymous.delete(f"/v1/images/{i}")).status_code for i in ids]
            left = 0
            for image_id in ids:
                left += (await owner.get(f"/v1/images/{image_id}/meta")).status_code == 200
    return [
        address,
        keyed,
        listing.status_code,
        len(seen),
        sorted(set(deletes)),
        f"{left}/{IMAGES}",
    ]


async def main() -> None:
    rows = [
        await _drill("203.0.113.7", with_key=False),
        await _drill("127.0.0.1", with_key=False),
        await _drill("127.0.0.1", with_key=True),
    ]
    headers = ["anonymous client at", "keys", "list", "ids listed", "delete answers", "images left"]
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    asyncio.run(main())
