"""`srstore` answers at once: help and the commands that only talk HTTP import no heavy module.

What each command needs is imported where it runs (srstore/cli.py); the packages the settings
read from (imaging, policy) load their names on first use. The import list is exact, so it
cannot flake; the start-up times are measured in bench/RESULTS.md ("CLI start-up").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).parent.parent
# Each costs a tenth of a second or more to import (SciPy a second), none is needed to parse a
# command line or to send an HTTP request.
HEAVY = ("torch", "numpy", "scipy", "skimage", "fastapi", "starlette", "uvicorn", "redis", "boto3")


def imported(*args: str) -> set[str]:
    """The top-level packages ``srstore ARGS`` imports, from ``python -X importtime``."""
    ran = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "srstore.cli", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SRSTORE_")},
        cwd=ROOT,
        timeout=120,
    )
    return {
        line.split("|")[-1].strip().split(".")[0]
        for line in ran.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["images", "--help"],
        ["images", "meta", "A" * 22, "--url", "http://127.0.0.1:{port}"],
        ["models", "list", "--url", "http://127.0.0.1:{port}"],
        ["costs", "--url", "http://127.0.0.1:{port}"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_help_and_http_commands_import_no_heavy_module(command: list[str]) -> None:
    """The HTTP commands meet a closed port: they fail at once, having imported what they need."""
    port = str(free_port())
    loaded = imported(*(part.replace("{port}", port) for part in command))

    assert "srstore" in loaded, "the command ran"
    assert sorted(loaded & set(HEAVY)) == []
