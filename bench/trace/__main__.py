"""Replay an access trace against each configuration and price what it cost.

    python -m bench.trace                      # the default trace, embedded mode
    python -m bench.trace --mode full          # Redis, SeaweedFS and a worker (queue mode)
    python -m bench.trace --log access.csv     # a real log: timestamp,image,size

Writes the table (``table.md``), the plot (``trace.png``) and the trace (``trace.csv``) to
``--out`` (a new folder under ``runs/trace/`` by default) and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from bench.inference import describe_machine
from bench.trace import report
from bench.trace.generate import DAY, TraceShape, from_log, photographs, synthetic, write_log
from bench.trace.replay import Clock, Deployment, environment, replay, scratch_dir
from config.durations import parse_duration
from config.settings import Settings

CONFIGURATIONS = {
    "originals": ("JPEG originals as uploaded", {"SRSTORE_STORAGE_POLICY": "original"}),
    "avif": ("full-size AVIF at the floor", {"SRSTORE_STORAGE_POLICY": "full"}),
    "x4": ("x4 always, today's cache", {"SRSTORE_STORAGE_POLICY": "downscale"}),
    "tiering": ("tiering", {"SRSTORE_TIERING": "on"}),
}


def arguments() -> argparse.Namespace:
    shape = TraceShape()
    parser = argparse.ArgumentParser(
        prog="python -m bench.trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=shape.images, help="images uploaded")
    parser.add_argument(
        "--reads",
        type=int,
        default=shape.reads,
        help="reads drawn (those falling after the end are dropped)",
    )
    parser.add_argument("--days", type=float, default=shape.days, help="length of the trace")
    parser.add_argument(
        "--upload-days",
        type=float,
        default=shape.upload_days,
        help="uploads are spread uniformly over the first this many days",
    )
    parser.add_argument(
        "--zipf",
        type=float,
        default=shape.zipf,
        help="popularity exponent: image k draws reads in proportion to 1/k^s",
    )
    parser.add_argument(
        "--half-life-days",
        type=float,
        default=shape.half_life_days,
        help="interest in an image halves every this many days",
    )
    parser.add_argument(
        "--thumbnail-share",
        type=float,
        default=shape.thumbnail_share,
        help="share of reads asking for a 320-px-wide rendition",
    )
    parser.add_argument("--seed", type=int, default=shape.seed)
    parser.add_argument("--log", type=Path, help="replay this CSV (timestamp,image,size) instead")
    parser.add_argument(
        "--seconds-per-day",
        type=float,
        default=2.0,
        help="real seconds per simulated day (the clock's acceleration)",
    )
    parser.add_argument(
        "--compact-after-idle",
        default=None,
        help="tiering: simulated idle time before compaction (30m, 7d, seconds; by default"
        " SRSTORE_COMPACT_AFTER_IDLE's default, as the product ships)",
    )
    parser.add_argument("--mode", choices=["embedded", "full"], default="embedded")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGURATIONS),
        help="comma-separated, of: " + ", ".join(CONFIGURATIONS),
    )
    parser.add_argument("--out", type=Path, help="folder for table.md, trace.png, trace.csv")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.log:
        reads, uploads = from_log(args.log)
        end = max(read.at for read in reads)
    else:
        shape = TraceShape(
            args.images,
            args.reads,
            args.days,
            args.upload_days,
            args.zipf,
            args.half_life_days,
            args.thumbnail_share,
            args.seed,
        )
        reads, uploads = synthetic(shape)
        end = args.days * DAY
    photos = photographs(sorted(uploads), args.seed)
    clock = Clock(args.seconds_per_day)
    out = args.out or Path("runs/trace") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    write_log(reads, out / "trace.csv")
    chosen = [name.strip() for name in args.configs.split(",") if name.strip()]
    common = {
        "SRSTORE_CACHE_TTL_SECONDS": clock.scaled_setting(86_400),
        "SRSTORE_CACHE_LARGE_TTL_SECONDS": clock.scaled_setting(7_200),
        "SRSTORE_CACHE_PROBATION_SECONDS": "1",
        "SRSTORE_COST_FLUSH_SECONDS": "1",
        "SRSTORE_QUALITY_FLOOR": f"ssim:{report.FLOOR_SSIM}",
    }
    tiering_built = "tiering" in Settings.model_fields
    results = []
    started = time.monotonic()
    with scratch_dir() as scratch, Deployment(args.mode, Path(scratch)) as deployment:
        for name in chosen:
            label, settings = CONFIGURATIONS[name]
            if name == "tiering":
                if not tiering_built:
                    print("tiering: not built yet, skipped")
                    continue
                simulated = (
                    parse_duration(args.compact_after_idle)
                    if args.compact_after_idle
                    else Settings().compact_after_idle
                )
                idle = clock.scaled_setting(simulated)
                settings = {**settings, "SRSTORE_COMPACT_AFTER_IDLE": idle}
            env = {**environment(), **common, **settings}
            with deployment.serve(env) as (api, worker):
                outcome = asyncio.run(replay(api, worker, reads, uploads, photos, clock, end))
            figures = report.figures(label, outcome, clock, Settings().prices, len(uploads))
            results.append((figures, outcome))
            print(f"{label}: done ({time.monotonic() - started:.0f} s)", flush=True)
    table = report.table([figures for figures, _ in results])
    head = [
        f"`python -m bench.trace {' '.join(sys.argv[1:])}` ({args.mode} mode), "
        f"{len(uploads)} images, {len(reads)} reads over {end / DAY:.1f} simulated days, "
        f"1 day = {args.seconds_per_day:g} s; wall {time.monotonic() - started:.0f} s;"
        f" load at the end {os.getloadavg()[0]:.2f}",
        *describe_machine(),
        "Dollars per million images of this mix and trace, at the default price settings.",
    ]
    text = "\n".join(head) + "\n\n" + table + "\n"
    (out / "table.md").write_text(text)
    report.plot(results, clock, out / "trace.png")
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
