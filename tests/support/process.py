"""Run ``srstore`` commands as real processes on free ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.servers import free_port, wait_until

# How long a process may take to be ready before the test fails. A bound, not a speed check:
# a start imports torch and scores the shipped models on the canary set (about 8 CPU seconds),
# which takes a minute and more on a 2-core machine running the suite's workers in parallel.
START_SECONDS = 240


@dataclass
class ApiProcess:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests die with the process."""
        self.process.kill()
        self.process.wait()


def _ready(api: ApiProcess) -> bool:
    if api.process.poll() is not None:
        raise RuntimeError(f"srstore serve exited with {api.process.returncode}")
    try:
        return httpx.get(f"{api.url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def log_digest(path: Path) -> str:
    """What a failure report shows of a process's log: its warnings and errors (tracebacks
    included), then its last lines."""
    lines = path.read_text(errors="replace").splitlines()
    notable = [line for line in lines if " INFO " not in line]
    return "\n".join([f"{path.name}, all but INFO:", *notable[-60:], "its end:", *lines[-15:]])


def start_api(
    env: Mapping[str, str],
    port: int | None = None,
    workers: int = 1,
    asgi_app: str = "",
    log_path: Path | None = None,
    host: str = "127.0.0.1",
) -> ApiProcess:
    """``srstore serve`` (or uvicorn serving ``asgi_app``) once /readyz answers 200.

    Its output is appended to ``log_path`` when given (tests read what it logged). It binds
    to ``host``; readiness is asked over loopback.
    """
    port = port or free_port()
    command = ["srstore.cli", "serve"] if not asgi_app else ["uvicorn", asgi_app, "--no-access-log"]
    log = log_path.open("ab") if log_path else None
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", *command, "--host", host),
            *("--port", str(port), "--workers", str(workers)),
        ],
        env={**os.environ, **env},
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    if log:
        log.close()
    api = ApiProcess(port, process)
    try:
        wait_until(lambda: _ready(api), START_SECONDS, "srstore serve")
    except BaseException:
        api.stop()
        raise
    return api


@dataclass
class WorkerProcess:
    name: str
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status once it has drained.

        A worker that does not drain in time is made to print every thread's stack (its
        fault handler, on SIGABRT) before the failure quotes its log: one was seen once
        (CI, 2026-12-05) holding a job for good after SIGTERM."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            raise AssertionError(
                f"srstore worker {self.name} did not stop within {timeout} s of SIGTERM\n"
                + log_digest(self.log_path)
            ) from None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _taking_jobs(worker: WorkerProcess) -> bool:
    if worker.process.poll() is not None:
        raise RuntimeError(f"srstore worker exited with {worker.process.returncode}")
    try:
        return "srstore_worker_up 1.0" in worker.metrics()
    except httpx.HTTPError:
        return False


def _metrics_port(log_path: Path, process: subprocess.Popen[bytes]) -> int | None:
    """The port the worker says it serves /metrics on, once it has said so."""
    if process.poll() is not None:
        raise RuntimeError(f"srstore worker exited with {process.returncode}")
    found = re.search(r"metrics on http://[^:]+:(\d+)/metrics", log_path.read_text())
    return int(found.group(1)) if found else None


def start_worker(
    env: Mapping[str, str], name: str, log_dir: Path, metrics_port: int | None = None
) -> WorkerProcess:
    """``srstore worker`` with the given SRSTORE_* settings, once it takes jobs.

    It is told to serve /metrics from ``metrics_port`` (a free port when not given); the port
    it took is the one it logs.
    """
    log_path = log_dir / f"worker-{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "srstore.cli", "worker", "--name", name],
        env={
            **os.environ,
            **env,
            "SRSTORE_WORKER_METRICS_PORT": str(metrics_port or free_port()),
            "PYTHONFAULTHANDLER": "1",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    worker = WorkerProcess(name, 0, process, log_path)
    try:
        wait_until(
            lambda: _metrics_port(log_path, process) is not None, START_SECONDS, "metrics port"
        )
        worker.metrics_port = _metrics_port(log_path, process) or 0
        wait_until(lambda: _taking_jobs(worker), START_SECONDS, "srstore worker")
    except BaseException:
        worker.kill()
        raise
    return worker
