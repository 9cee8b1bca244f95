"""Peak memory that scoring one upload adds, per pixel: the basis of compaction's reservation.

    python -m bench.scoring_memory [--sides 1000,2000] [--policies downscale,guarded]

Each size and policy runs in a fresh process (so one run's freed memory cannot hide the
next one's peak): the shipped ESPCN loaded, the photo resized to a square and encoded as JPEG
q90, decoded, then compaction's choice (``policy.choose.choose`` with the read path's own
reconstruction, floor ``psnr:99`` so ``guarded`` searches) while a thread samples the
process's resident set every 5 ms. Prints the peak added over the resident set just before
the choice, in MiB and in bytes per pixel of the upload (``SCORING_BYTES_PER_PIXEL`` in
``render/compaction.py``).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image

from bench.inference import PHOTO
from config.settings import Settings
from imaging import PILLOW_MAX_PIXELS, decode_upload, downscale, encode_stored
from models.engine import NeuralUpscaler
from models.weights import find_weights, load_model
from policy import Floor
from policy.choose import choose
from render.compaction import SCORING_BYTES_PER_PIXEL
from render.images import ImageMeta
from render.inference import read_back


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def measure(side: int, policy: str) -> int:
    """Peak bytes the choice adds, in this process."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(data_dir=Path(scratch))
        weights = find_weights(settings.weights_dir, "espcn", None)
        assert weights is not None, "no shipped ESPCN weights"
        upscaler = NeuralUpscaler(
            load_model("espcn", weights.path), "espcn", weights.version, torch.device("cpu")
        )
        photo = Image.open(PHOTO).convert("RGB").resize((side, side))
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()
        x4 = encode_stored(downscale(photo), settings.codec)
        meta = ImageMeta(
            id="A" * 22,
            width=side,
            height=side,
            stored_width=side // 4,
            stored_height=side // 4,
            content_type="image/jpeg",
            original_bytes=len(data),
            stored_bytes=len(x4),
            served_format="jpeg",
            created_at=datetime.now(UTC),
        )
        image = decode_upload(data, PILLOW_MAX_PIXELS).image
        base, peak, done = resident_bytes(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], resident_bytes())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        choose(
            image=image,
            original=data,
            x4=x4,
            policy=policy,  # type: ignore[arg-type]
            floor=Floor.parse("psnr:99"),
            codec=settings.full_codec,
            reconstruct=read_back(meta, upscaler, settings.output_encoding),
            model=upscaler.label,
        )
        done.set()
        sampler.join()
        return peak[0] - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sides", default="1000,2000")
    parser.add_argument("--policies", default="downscale,guarded")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # side policy, in a child
    args = parser.parse_args()
    if args.one:
        print(measure(int(args.one[0]), args.one[1]))
        return
    reserved = f"bytes per pixel (reserved: {SCORING_BYTES_PER_PIXEL})"
    print(f"| upload | policy | peak added MiB | {reserved} |")
    print("|---|---|---:|---:|")
    for side in map(int, args.sides.split(",")):
        for policy in args.policies.split(","):
            child = [sys.executable, "-m", "bench.scoring_memory", "--one", str(side), policy]
            added = int(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
            print(f"| {side}x{side} | {policy} | {added / 2**20:.0f} | {added / side**2:.0f} |")


if __name__ == "__main__":
    main()
