"""Run ``srstore`` commands as real processes on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.servers import free_port, wait_until


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


def start_api(
    env: Mapping[str, str], port: int | None = None, log_path: Path | None = None
) -> ApiProcess:
    """``srstore serve`` with the given SRSTORE_* settings, once /readyz answers 200.

    Its output is appended to ``log_path`` when given (tests read what it logged).
    """
    port = port or free_port()
    log = log_path.open("ab") if log_path else None
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    if log:
        log.close()
    api = ApiProcess(port, process)
    try:
        wait_until(lambda: _ready(api), 60, "srstore serve")
    except BaseException:
        api.stop()
        raise
    return api
