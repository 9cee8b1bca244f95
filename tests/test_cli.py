"""The srstore command as a user meets it: tables, --json, one-line errors, doctor, the README."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import forget_active_model
from tests.support.process import ApiProcess, start_api
from tests.support.servers import RedisServer, SeaweedServer, free_port

ROOT = Path(__file__).parent.parent
TOKEN = "a-cli-test-admin-token"
BIN = Path(sys.executable).parent


def srstore(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "srstore.cli", *args],
        capture_output=True,
        text=True,
        env={**clean_environment(), **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def clean_environment() -> dict[str, str]:
    """This process's environment without SRSTORE_* (each test names what it sets)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SRSTORE_")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, dict[str, str]]]:
    """``srstore serve`` in the embedded default, with an admin token and the shipped weights."""
    port = free_port()
    env = {
        "SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("cli") / "data"),
        "SRSTORE_ADMIN_TOKEN": TOKEN,
        "SRSTORE_PORT": str(port),
    }
    api = start_api(env, port=port)
    yield api, env
    api.stop()


def test_help_is_plain_text_for_every_command() -> None:
    commands = [[], ["serve"], ["worker"], ["doctor"], ["images"], ["images", "upload"]]
    commands += [["images", "get"], ["models"], ["models", "upload"], ["models", "activate"]]
    for command in commands:
        helped = srstore(*command, "--help")

        assert helped.returncode == 0, (command, helped.stderr)
        assert "``" not in helped.stdout and ":mod:" not in helped.stdout, command


def test_a_down_server_is_one_line_and_a_non_zero_exit() -> None:
    port = free_port()
    env = {"SRSTORE_PORT": str(port)}

    for command in (["models", "list"], ["images", "meta", "A" * 22]):
        answered = srstore(*command, env=env)

        assert answered.returncode == 1
        assert answered.stdout == ""
        assert answered.stderr == (
            f"srstore: error: cannot reach the srstore API at http://127.0.0.1:{port}: "
            "is `srstore serve` running? (--url names another address)\n"
        )


def test_a_missing_file_is_one_line(server: tuple[ApiProcess, dict[str, str]]) -> None:
    answered = srstore("images", "upload", "no-such.jpg", env=server[1])

    assert (answered.returncode, answered.stderr) == (
        1,
        "srstore: error: no-such.jpg: No such file or directory\n",
    )


def test_images_upload_get_meta_delete_through_the_api(
    server: tuple[ApiProcess, dict[str, str]], tmp_path: Path
) -> None:
    _, env = server
    flower = ROOT / "tests/data/flower.jpg"

    uploaded = srstore("images", "upload", str(flower), env=env)
    (line,) = [row for row in uploaded.stdout.splitlines() if str(flower) in row]
    image_id = line.split()[0]
    meta = json.loads(srstore("images", "meta", image_id, "--json", env=env).stdout)
    described = srstore("images", "meta", image_id, env=env).stdout
    got = srstore(
        "images", "get", image_id, "--format", "png", "-o", str(tmp_path / "big.png"), env=env
    )
    deleted = srstore("images", "delete", image_id, env=env)
    gone = srstore("images", "get", image_id, env=env, cwd=tmp_path)

    assert uploaded.returncode == 0 and uploaded.stderr == "", uploaded.stderr  # no httpx lines
    assert uploaded.stdout.split()[:6] == ["id", "file", "size", "uploaded", "bytes", "stored"]
    assert (meta["id"], meta["width"], meta["height"]) == (image_id, *Image.open(flower).size)
    assert line.split()[-1] == "pending"  # the receipt is decided in the background
    assert re.search(r"^receipt state +(pending|done) *$", described, re.MULTILINE), described
    assert got.returncode == 0 and got.stdout.startswith(f"wrote {tmp_path / 'big.png'}")
    assert Image.open(tmp_path / "big.png").size == Image.open(flower).size
    assert deleted.stdout == f"deleted {image_id}\n"
    assert (gone.returncode, gone.stderr) == (
        1,
        "srstore: error: 404 not_found: no image with this id\n",
    )


def test_models_list_is_a_table_and_json_for_scripts(
    server: tuple[ApiProcess, dict[str, str]],
) -> None:
    listed = srstore("models", "list", env=server[1])
    scripted = json.loads(srstore("models", "list", "--json", env=server[1]).stdout)
    refused = srstore("models", "list", env={**server[1], "SRSTORE_ADMIN_TOKEN": "x" * 20})

    assert listed.stdout.splitlines()[0].split() == [
        "active",
        "model",
        "parameters",
        "gain",
        "over",
        "bicubic",
        "canary",
        "PSNR",
    ]
    active = [row.split()[1] for row in listed.stdout.splitlines()[2:] if row.startswith("*")]
    assert active == [f"{scripted['active']['name']}:{scripted['active']['version']}"]
    assert len(listed.stdout.splitlines()) == 2 + len(scripted["models"])
    assert refused.returncode == 1
    assert refused.stderr == "srstore: error: 401 unauthorized: a valid bearer token is required\n"


def test_a_bad_setting_stops_serve_with_one_line_per_variable() -> None:
    env = {"SRSTORE_DEVICE": "gpu", "SRSTORE_PORT": "0", "SRSTORE_ADMIN_TOKEN": "short"}
    expected = (
        "srstore: bad configuration:\n"
        "  SRSTORE_DEVICE='gpu': Input should be 'auto', 'cpu' or 'cuda'\n"
        "  SRSTORE_ADMIN_TOKEN=(hidden): SRSTORE_ADMIN_TOKEN must be at least 16 characters\n"
        "  SRSTORE_PORT='0': Input should be greater than or equal to 1\n"
    )

    served = srstore("serve", env=env)
    worker = srstore("worker", env=env)
    uvicorn = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app"],
        capture_output=True,
        text=True,
        env={**clean_environment(), **env},
        cwd=ROOT,
        timeout=120,
    )

    assert (served.returncode, served.stderr) == (2, expected)
    assert (worker.returncode, worker.stderr) == (2, expected)
    assert uvicorn.returncode == 1 and uvicorn.stderr.endswith(expected)
    assert "Traceback" not in uvicorn.stderr


@pytest.mark.full
def test_doctor_reaches_every_service_and_flags_what_is_wrong(
    redis_server: RedisServer, seaweed_server: SeaweedServer, tmp_path: Path
) -> None:
    forget_active_model(redis_server.url)  # a fresh fleet: no version active yet
    env = {
        "SRSTORE_REDIS_URL": redis_server.url,
        "SRSTORE_S3_BUCKET": "srstore-doctor",
        "SRSTORE_S3_ENDPOINT_URL": seaweed_server.endpoint_url,
        "SRSTORE_DATA_DIR": str(tmp_path),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }

    healthy = srstore("doctor", "--json", env=env)
    broken = srstore(
        "doctor",
        "--json",
        env={
            **env,
            "SRSTORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "SRSTORE_MODLE": "x",
        },
    )
    misconfigured = srstore("doctor", env={"SRSTORE_STORED_CODEC": "gif"})

    checks = {c["what"]: c for c in json.loads(healthy.stdout)}
    assert healthy.returncode == 0, healthy.stdout
    assert set(checks) == {"configuration", "object store", "cache", "model", "device", "codecs"}
    assert checks["object store"]["status"] == "warn"  # the bucket: serve creates it
    assert checks["cache"] == {"what": "cache", "status": "ok", "detail": "RedisCache"}
    assert re.fullmatch(
        r"espcn:\d+ \(activated on first start\) loads: \d+ parameters", checks["model"]["detail"]
    )
    assert checks["device"]["detail"].startswith("cpu: ")
    assert "webp" in checks["codecs"]["detail"]
    failures = [c["detail"] for c in json.loads(broken.stdout) if c["status"] == "FAIL"]
    assert broken.returncode == 1
    assert "SRSTORE_MODLE is not an srstore setting (did you mean SRSTORE_MODEL?)" in failures
    assert any(
        f.startswith("redis") or "Redis" in f or "6379" in f or "127.0.0.1" in f for f in failures
    )
    assert misconfigured.returncode == 1
    assert "SRSTORE_STORED_CODEC='gif': Input should be" in misconfigured.stdout


def readme_block(marker: str) -> list[str]:
    """The commands of the README's shell block that contains ``marker``, comments dropped."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readmes_cli_commands_work_verbatim(
    server: tuple[ApiProcess, dict[str, str]], tmp_path: Path
) -> None:
    _, env = server
    for folder in ("tests", "models"):  # the paths the README names, in a scratch folder
        (tmp_path / folder).symlink_to(ROOT / folder)
    images = readme_block("srstore images upload")
    # The token line is for a reader's shell; this server already has one.
    models = [
        line for line in readme_block("srstore models upload") if not line.startswith("export")
    ]
    shell = {**clean_environment(), **env, "PATH": f"{BIN}:{os.environ['PATH']}"}

    for commands in (images, models):
        script = "set -euo pipefail\n" + "\n".join(commands)
        ran = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            env=shell,
            cwd=tmp_path,
            timeout=300,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr

    assert Image.open(tmp_path / "big.jpg").size == Image.open(ROOT / "tests/data/flower.jpg").size
    assert Image.open(tmp_path / "big.png").format == "PNG"
