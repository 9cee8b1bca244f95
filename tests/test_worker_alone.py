"""A worker host needs no web framework: ``srstore worker`` runs with FastAPI unimportable."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import forget_active_model, queue_env, serving, settings_from
from tests.support.process import start_worker
from tests.support.servers import RedisServer, SeaweedServer

# Imported by every Python process whose path holds it, before any other import: FastAPI and
# Starlette then fail to import as if they were not installed.
BLOCKER = """
import sys


class _WebFrameworkBlocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"fastapi", "starlette"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _WebFrameworkBlocked())
"""


@pytest.fixture
def without_fastapi(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which ``import fastapi`` fails."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    paths = [str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_blocker_makes_fastapi_unimportable(without_fastapi: dict[str, str]) -> None:
    blocked = python(without_fastapi, "import fastapi")

    assert blocked.returncode == 1
    assert "ModuleNotFoundError: No module named 'fastapi' (blocked)" in blocked.stderr


def test_the_worker_entry_point_imports_no_web_app(without_fastapi: dict[str, str]) -> None:
    loaded = python(
        without_fastapi,
        "import json, sys, srstore.cli, worker.main\n"
        "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))",
    )

    assert loaded.returncode == 0, loaded.stderr
    top_level = json.loads(loaded.stdout)
    assert {"srstore", "worker", "render"} <= set(top_level)
    assert not {"app", "fastapi", "starlette"} & set(top_level)


@pytest.mark.full
async def test_a_worker_without_fastapi_renders_the_apis_misses(
    without_fastapi: dict[str, str],
    redis_server: RedisServer,
    seaweed_server: SeaweedServer,
    tmp_path: Path,
    photo_bytes: bytes,
) -> None:
    forget_active_model(redis_server.url)
    env = queue_env(redis_server, seaweed_server)
    worker = start_worker({**env, **without_fastapi}, "no-fastapi", tmp_path)
    try:
        async with serving(settings_from(env)) as (_, client):
            created = await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
            response = await client.get(f"/v1/images/{created.json()['id']}")
        scraped = worker.metrics()
    finally:
        exit_status = worker.stop()

    assert response.status_code == 200
    assert response.headers["x-cache"] == "MISS"
    assert Image.open(io.BytesIO(response.content)).size == (602, 402)
    assert 'srstore_worker_jobs_total{outcome="rendered"} 1.0' in scraped
    assert exit_status == 0
