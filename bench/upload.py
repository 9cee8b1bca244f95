"""What an upload costs now that compaction runs in the background: 1 MP and 12 MP, per policy.

    python -m bench.upload [--photo PATH] [--repeat 3] [--policies downscale,guarded,smallest]

In one process, side by side, embedded store, the shipped ESPCN, nothing else running in it:

- "ingest only": decode, 4x reduction, WebP encode and one store write (the upload as it was
  before quality receipts), wall ms and process CPU ms;
- "POST": ``POST /v1/images`` through the ASGI app (validation, decode, the same reduction,
  two store writes), with its compaction held back while it is measured; the ratio to ingest;
- "receipt": the compaction, released alone: wall ms until the receipt is done and its CPU;
  "miss": a cold read of the same image (its cache dropped), CPU ms; the receipt's CPU in
  cold misses.

The photo is resized to 1024x1024 and 4000x3000 (LANCZOS) and uploaded as JPEG q90;
"captioned" is the same photo with lines of 11-pixel text drawn over it, the kind of image
whose x4 copy fails the floor (so guarded searches a full-size AVIF quality). Median of
``--repeat`` (default 1: a 12 MP smallest compaction takes minutes on a small machine).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast, get_args

import httpx
from PIL import Image, ImageDraw, ImageFont

from app.main import create_app
from app.services.compaction import BackgroundCompactions
from app.services.images import ImageService, new_image_id
from bench.inference import PHOTO, describe_machine
from config.settings import Settings
from imaging import decode_upload, downscale, encode_stored
from policy import STORAGE_POLICIES, Floor, StoragePolicy
from render.images import object_key

SIZES = {"1 MP": (1024, 1024), "12 MP": (4000, 3000)}
FLOOR = Floor.parse("ssim:0.9")


def policy_of(name: str) -> StoragePolicy:
    policies = get_args(StoragePolicy)
    if name not in policies:
        raise argparse.ArgumentTypeError(f"{name!r} is none of {', '.join(policies)}")
    return cast(StoragePolicy, name)


def caption(image: Image.Image) -> Image.Image:
    captioned = image.copy()
    draw = ImageDraw.Draw(captioned)
    font = ImageFont.load_default(size=11)
    for line in range(captioned.height // 14):
        draw.text(
            (4, 4 + 14 * line), "The quick brown fox jumps over 0123456789 " * 20, "black", font
        )
    return captioned


def as_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


async def measured(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Wall and process CPU milliseconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


async def ingest_only(service: ImageService, data: bytes) -> None:
    """The upload path as it was before receipts: no scoring, the x4 copy always."""
    decoded = await asyncio.to_thread(decode_upload, data, service.settings.max_pixels)
    stored = await asyncio.to_thread(
        lambda: encode_stored(downscale(decoded.image), service.settings.codec)
    )
    await service.store.put(object_key(new_image_id()), stored, {})


class Bench:
    def __init__(self, service: ImageService, client: httpx.AsyncClient) -> None:
        self.service = service
        self.client = client
        self.held: list[str] = []
        self.submit = service.compactions.submit

        async def hold(image_id: str) -> None:
            self.held.append(image_id)

        service.compactions.submit = hold  # type: ignore[method-assign]

    async def post(self, data: bytes, policy: str) -> str:
        response = await self.client.post(
            "/v1/images",
            params={"policy": policy, "floor": str(FLOOR)},
            content=data,
            headers={"content-type": "image/jpeg"},
        )
        response.raise_for_status()
        return str(response.json()["id"])

    async def compact_all(self) -> None:
        """Release the held compactions and wait until the pool is idle."""
        held, self.held = self.held, []
        for image_id in held:
            await self.submit(image_id)
        compactions = self.service.compactions
        assert isinstance(compactions, BackgroundCompactions)  # the embedded mode's pool
        while compactions.waiting:
            await asyncio.sleep(0.01)

    async def cold_miss(self, image_id: str) -> None:
        await self.service.cache.drop_image(image_id)
        (await self.client.get(f"/v1/images/{image_id}")).raise_for_status()


def wait_for_compilers() -> None:
    """Join the background ``torch.compile`` threads, so no row pays for compiling beside it."""
    for thread in threading.enumerate():
        if thread.name.startswith("compile-"):
            thread.join()


def median(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


async def report(photo: Path, repeat: int, policies: list[StoragePolicy]) -> str:
    source = Image.open(photo).convert("RGB")
    lines = [
        f"## Upload and background compaction (ms, median of {repeat}; floor {FLOOR})",
        "",
        "| upload | policy | ingest only wall / CPU | POST wall / CPU | POST / ingest (wall) "
        "| receipt wall / CPU | cold miss CPU | receipt in misses (CPU) | kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        # This loopback client has no key: the operator allows it ?policy= and ?floor=.
        settings = Settings(data_dir=Path(scratch), anonymous_costly_options=True)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                service: ImageService = app.state.image_service
                bench = Bench(service, client)
                wait_for_compilers()
                await bench.post(as_jpeg(source), "smallest")  # load the model, AVIF
                await bench.compact_all()
                for size_name, size in SIZES.items():
                    resized = source.resize(size, Image.Resampling.LANCZOS)
                    for kind, image in (("photo", resized), ("captioned", caption(resized))):
                        data = as_jpeg(image)
                        for policy in policies:
                            ingest, post, receipt, miss = [], [], [], []
                            kept = ""
                            for _ in range(repeat):
                                ingest.append(await measured(lambda: ingest_only(service, data)))  # noqa: B023
                                ids: list[str] = []

                                async def upload() -> None:
                                    ids.append(await bench.post(data, policy))  # noqa: B023

                                post.append(await measured(upload))
                                receipt.append(await measured(bench.compact_all))
                                miss.append(await measured(lambda: bench.cold_miss(ids[0])))  # noqa: B023
                                kept = (await service.meta(ids[0])).representation
                            (iw, ic), (pw, pc) = median(ingest), median(post)
                            (rw, rc), (_, mc) = median(receipt), median(miss)
                            lines.append(
                                f"| {size_name} {kind} ({len(data)} B) | {policy} "
                                f"| {iw:.0f} / {ic:.0f} | {pw:.0f} / {pc:.0f} | {pw / iw:.2f}x "
                                f"| {rw:.0f} / {rc:.0f} | {mc:.0f} | {rc / mc:.1f} | {kept} |"
                            )
            lines.append("")
            lines.append(f"Model {service.models.label}; 'kept': the representation chosen.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--policies",
        type=lambda text: [policy_of(name) for name in text.split(",")],
        default=list(STORAGE_POLICIES),
        help="comma-separated storage policies (default: the three a client may ask for)",
    )
    args = parser.parse_args()
    print("\n".join(describe_machine()))
    print()
    print(asyncio.run(report(args.photo, args.repeat, args.policies)))


if __name__ == "__main__":
    main()
