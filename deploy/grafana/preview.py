"""Render the Grafana dashboard's panels as a PNG from a real, short, local run.

Grafana itself is not needed: this starts ``srstore serve --workers 2`` (embedded mode, a
temporary data directory) and a real ``prometheus`` scraping it every 2 s, both on loopback
ports, sends a bounded load (uploads, repeated reads, a few deletes and 404s), then evaluates
every panel's PromQL from ``srstore.json`` through Prometheus's query API and draws the panels
with matplotlib at their dashboard positions. Everything it started is stopped at the end.

    PYTHONPATH=. python deploy/grafana/preview.py --seconds 120 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

from tests.support.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/srstore.json"
SCRAPE_SECONDS = 2
PRICE_PER_GB_MONTH = "0.023"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="length of the load")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="srstore-preview-") as scratch:
        work = Path(scratch)
        api_port, prom_port = free_port(), free_port()
        api = start_api(work, api_port)
        prometheus = start_prometheus(work, api_port, prom_port)
        try:
            started = time.time()
            load(f"http://127.0.0.1:{api_port}", args.seconds)
            time.sleep(3 * SCRAPE_SECONDS)
            render(f"http://127.0.0.1:{prom_port}", started, time.time(), args.out)
        finally:
            for process in (prometheus, api):
                process.terminate()
                process.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


def start_api(work: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SRSTORE_DATA_DIR": str(work), "SRSTORE_TORCH_THREADS": "1"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "multiproc")
    command = [sys.executable, "-m", "srstore.cli", "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/readyz"
    wait_until(lambda: _answers(url), 60, "srstore serve")
    return process


def start_prometheus(work: Path, api_port: int, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is missing: apt-get install prometheus")
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [
            {"job_name": "srstore-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/-/ready"), 60, "prometheus")
    return process


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def load(api: str, seconds: int) -> None:
    """Uploads, then reads with a skewed popularity so the cache warms up; bounded in time."""
    photos = [
        Image.open(ROOT / "tests/data" / name).convert("RGB")
        for name in ("flower.jpg", "storm.jpg")
    ]
    rng = random.Random(6)
    ids: list[str] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=api, timeout=30) as http:
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.15 or not ids:
                photo = rng.choice(photos)
                scale = rng.uniform(0.3, 1.0)
                image = photo.resize((int(photo.width * scale), int(photo.height * scale)))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=rng.choice([80, 90, 95]))
                # A third under the guarded policy, at a floor some of them miss as x4 copies.
                guarded = {"policy": "guarded", "floor": "ssim:0.97"} if roll < 0.05 else {}
                created = http.post(
                    "/v1/images",
                    params=guarded,
                    content=buffer.getvalue(),
                    headers={"content-type": "image/jpeg"},
                )
                ids.append(created.json()["id"])
            elif roll < 0.17 and len(ids) > 3:
                http.delete(f"/v1/images/{ids.pop(rng.randrange(len(ids)))}")
            elif roll < 0.19:
                http.get("/v1/images/AAAAAAAAAAAAAAAAAAAAAA")  # a 404
            else:
                rank = min(int(rng.paretovariate(1.2)) - 1, len(ids) - 1)
                fmt = rng.choice([None, None, None, "webp"])
                http.get(f"/v1/images/{ids[-1 - rank]}", params={"format": fmt} if fmt else None)


def render(prometheus: str, start: float, end: float, out: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(24, rows * 0.42))
    figure.suptitle(
        "srstore dashboard, rendered with matplotlib from a real Prometheus scraping a short "
        f"local load ({int(end - start)} s, embedded mode, 2 uvicorn workers; not Grafana)",
        fontsize=13,
    )
    with httpx.Client(base_url=prometheus, timeout=30) as http:
        for panel in panels:
            x, y, w, h = (panel["gridPos"][k] for k in ("x", "y", "w", "h"))
            axes = figure.add_axes(
                (
                    (x + 0.6) / 24,
                    1 - (y + h - 0.3) / rows * 0.95 - 0.03,
                    (w - 1.2) / 24,
                    (h - 1.6) / rows * 0.95,
                )
            )
            axes.set_title(panel["title"], fontsize=11, loc="left")
            series = [
                (target["legendFormat"], result)
                for target in panel["targets"]
                for result in _query(http, target["expr"], start, end)
            ]
            if not series:
                axes.text(
                    0.5,
                    0.5,
                    "no data\n(published by srstore worker)",
                    ha="center",
                    va="center",
                    color="grey",
                )
                axes.set_axis_off()
            elif panel["type"] == "stat":
                _stat(
                    axes,
                    float(series[0][1]["values"][-1][1]),
                    panel["fieldConfig"]["defaults"]["unit"],
                )
            else:
                for legend, result in series:
                    times = [float(t) - start for t, _ in result["values"]]
                    values = [float(v) for _, v in result["values"]]
                    axes.plot(times, values, label=_legend(legend, result["metric"]))
                axes.legend(fontsize=7, loc="upper left")
                axes.set_xlabel("seconds into the run", fontsize=8)
                axes.tick_params(labelsize=8)
                axes.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=60)


def _query(http: httpx.Client, expr: str, start: float, end: float) -> list[dict]:
    expr = expr.replace("$__rate_interval", f"{5 * SCRAPE_SECONDS}s")
    expr = expr.replace("$price_per_gb_month", PRICE_PER_GB_MONTH)
    response = http.get(
        "/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": SCRAPE_SECONDS},
    )
    response.raise_for_status()
    return [r for r in response.json()["data"]["result"] if r["values"]]


def _stat(axes: plt.Axes, value: float, unit: str) -> None:
    if unit == "bytes":
        text = f"{value / 2**20:.2f} MiB"
    elif unit == "percentunit":
        text = f"{value:.1%}"
    elif unit == "currencyUSD":
        text = f"${value:.6f}"
    else:
        text = f"{value:.0f}"
    axes.text(0.5, 0.45, text, ha="center", va="center", fontsize=28, color="tab:green")
    axes.set_axis_off()


def _legend(template: str, labels: dict[str, str]) -> str:
    for name, value in labels.items():
        template = template.replace("{{" + name + "}}", value)
    return template


if __name__ == "__main__":
    sys.exit(main())
