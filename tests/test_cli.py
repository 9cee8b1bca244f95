"""The srstore command as a user meets it: tables, --json, one-line errors, doctor, the README."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.services.images import new_image_id
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


def shown(ran: subprocess.CompletedProcess[str]) -> str:
    """A command's exit status and both its outputs, for a failure message."""
    return f"{ran.args[3:]} exited {ran.returncode}\nstdout: {ran.stdout}\nstderr: {ran.stderr}"


def clean_environment() -> dict[str, str]:
    """This process's environment without SRSTORE_* (each test names what it sets)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SRSTORE_")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, dict[str, str]]]:
    """``srstore serve`` in the embedded default, with an admin token and the shipped weights."""
    port = free_port()
    folder = tmp_path_factory.mktemp("cli")
    env = {
        "SRSTORE_DATA_DIR": str(folder / "data"),
        "SRSTORE_ADMIN_TOKEN": TOKEN,
        "SRSTORE_PORT": str(port),
        "SRSTORE_ANONYMOUS_COSTLY_OPTIONS": "true",  # the CLI's --policy and --floor
    }
    api = start_api(env, port=port, log_path=folder / "serve.log")
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
    assert uploaded.returncode == 0 and uploaded.stderr == "", shown(uploaded)  # no httpx lines
    (line,) = [row for row in uploaded.stdout.splitlines() if str(flower) in row]
    image_id = line.split()[0]
    described = srstore("images", "meta", image_id, "--json", env=env)
    assert described.returncode == 0, shown(described)
    meta = json.loads(described.stdout)
    table = srstore("images", "meta", image_id, env=env).stdout
    got = srstore(
        "images", "get", image_id, "--format", "png", "-o", str(tmp_path / "big.png"), env=env
    )
    deleted = srstore("images", "delete", image_id, env=env)
    gone = srstore("images", "get", image_id, env=env, cwd=tmp_path)

    assert uploaded.stdout.split()[:6] == ["id", "file", "size", "uploaded", "bytes", "stored"]
    assert (meta["id"], meta["width"], meta["height"]) == (image_id, *Image.open(flower).size)
    assert line.split()[-1] == "pending"  # the receipt is decided in the background
    assert re.search(r"^receipt\.state +(pending|done) *$", table, re.MULTILINE), table
    assert got.returncode == 0 and got.stdout.startswith(f"wrote {tmp_path / 'big.png'}"), shown(
        got
    )
    assert Image.open(tmp_path / "big.png").size == Image.open(flower).size
    assert deleted.stdout == f"deleted {image_id}\n", shown(deleted)
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

    assert re.split(r"\s{2,}", listed.stdout.splitlines()[0].strip()) == [
        *("active", "model", "parameters", "canary Y-PSNR", "canary gain", "held-out gain")
    ]
    active = [row.split()[1] for row in listed.stdout.splitlines()[2:] if row.startswith("*")]
    assert active == [f"{scripted['active']['name']}:{scripted['active']['version']}"]
    assert len(listed.stdout.splitlines()) == 2 + len(scripted["models"])
    assert refused.returncode == 1
    assert refused.stderr == (
        "srstore: error: 401 unauthorized: unknown or revoked API key "
        "(SRSTORE_ADMIN_TOKEN in this shell differs from the server's)\n"
    )


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
    redis_server: RedisServer,
    seaweed_server: SeaweedServer,
    server: tuple[ApiProcess, dict[str, str]],
    tmp_path: Path,
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

    healthy = srstore("doctor", "--json", "--url", server[0].url, env=env)
    broken = srstore(
        "doctor",
        "--json",
        "--url",
        server[0].url,
        env={
            **env,
            "SRSTORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "SRSTORE_MODLE": "x",
        },
    )
    misconfigured = srstore("doctor", env={"SRSTORE_STORED_CODEC": "gif"})

    checks = {c["what"]: c for c in json.loads(healthy.stdout)}
    assert healthy.returncode == 0, healthy.stdout
    assert set(checks) == {
        *("configuration", "api", "object store", "cache", "model", "access", "device", "codecs")
    }
    assert checks["api"]["status"] == "ok"
    assert checks["api"]["detail"].startswith(f"{server[0].url} is ready (storage LocalStore, ")
    assert checks["access"]["detail"].startswith("protected: no API key exists")
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


def test_doctor_fails_when_no_api_answers_where_the_cli_would_talk(tmp_path: Path) -> None:
    """Every other check may pass: `srstore images ...` would still fail, so doctor does."""
    port = free_port()
    env = {"SRSTORE_DATA_DIR": str(tmp_path), "SRSTORE_PORT": str(port)}

    checked = srstore("doctor", env=env)
    scripted = srstore("doctor", "--json", env=env)

    assert checked.returncode == 1, shown(checked)
    (api,) = [c for c in json.loads(scripted.stdout) if c["what"] == "api"]
    assert api == {
        "what": "api",
        "status": "FAIL",
        "detail": f"nothing answers at http://127.0.0.1:{port}: is `srstore serve` running?",
    }
    assert re.search(r"^api +FAIL +nothing answers at ", checked.stdout, re.M), checked.stdout


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


def settled_meta(api: ApiProcess, image_id: str) -> dict[str, object]:
    """The image's /meta once its receipt is no longer pending (observed, not slept on)."""
    deadline = time.monotonic() + 120
    while True:
        meta: dict[str, object] = httpx.get(f"{api.url}/v1/images/{image_id}/meta").json()
        if "pending" not in json.dumps(meta) or time.monotonic() > deadline:
            return meta
        time.sleep(0.2)


def test_a_receipt_is_rows_of_readable_figures_and_the_listing_shows_the_upload(
    server: tuple[ApiProcess, dict[str, str]], tmp_path: Path
) -> None:
    api, env = server
    flower = str(ROOT / "tests/data/flower.jpg")
    uploaded = srstore(
        "images", "upload", "-q", "--policy", "guarded", "--floor", "ssim:0.5", flower, env=env
    )
    assert uploaded.returncode == 0, shown(uploaded)
    image_id = uploaded.stdout.strip()
    settled_meta(api, image_id)

    described = srstore("images", "meta", image_id, env=env)
    listed = srstore("images", "list", "--limit", "100", env=env)
    scripted = json.loads(srstore("images", "list", "--all", "--json", env=env).stdout)
    got = srstore("images", "get", image_id, "--format", "avif", env=env, cwd=tmp_path)

    rows = dict(re.findall(r"^(\S+) +(.+?)\s*$", described.stdout, re.M)[1:])
    assert described.returncode == 0, shown(described)
    assert "{" not in described.stdout and "None" not in described.stdout
    assert (rows["receipt.policy"], rows["receipt.floor"]) == ("guarded", "ssim:0.5")
    assert re.fullmatch(r"\d+\.\d\d dB", rows["receipt.psnr"]), rows
    assert re.fullmatch(r"[01]\.\d{4}", rows["receipt.ssim"]), rows
    assert rows["receipt.meets_floor"] == "yes"
    assert listed.stdout.split()[:4] == ["id", "size", "uploaded", "as"]
    assert any(row.split()[:2] == [image_id, "602x402"] for row in listed.stdout.splitlines())
    assert image_id in [meta["id"] for meta in scripted["images"]]
    assert scripted["next_cursor"] is None
    assert got.returncode == 0, shown(got)
    assert Image.open(tmp_path / f"{image_id}.avif").format == "AVIF"


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(
    server: tuple[ApiProcess, dict[str, str]],
) -> None:
    """`srstore models list | head -1`: no traceback, and the exit status a shell expects."""
    command = subprocess.Popen(
        [sys.executable, "-m", "srstore.cli", "models", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**clean_environment(), **server[1]},
        cwd=ROOT,
    )
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()  # the reader is gone before the first line is written

    assert command.wait(timeout=120) == 128 + signal.SIGPIPE
    assert command.stderr.read() == b""


def test_a_refused_activation_says_which_flag_forces_it(
    server: tuple[ApiProcess, dict[str, str]],
) -> None:
    _, env = server
    listed = json.loads(srstore("models", "list", "--json", env=env).stdout)
    active = listed["active"]
    score = {(m["name"], m["version"]): m["card"]["canary"]["model_psnr"] for m in listed["models"]}
    worse = min(score, key=score.__getitem__)
    assert score[worse] < score[active["name"], active["version"]] - 0.05, score

    refused = srstore("models", "activate", worse[0], str(worse[1]), env=env)

    assert refused.returncode == 1
    assert refused.stderr.startswith("srstore: error: 409 worse_than_active: ")
    assert refused.stderr.endswith(" (--force activates it anyway)\n"), refused.stderr


def test_new_ids_never_look_like_an_option_to_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause of a flaky run: an id with a leading '-' (1 in 64) was parsed as an option."""
    drawn = iter(["-" + "A" * 21, "_" + "B" * 21])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _: next(drawn))

    assert new_image_id() == "_" + "B" * 21


def test_an_existing_id_with_a_leading_dash_is_passed_after_a_double_dash() -> None:
    port = free_port()
    dashed = srstore("images", "meta", "--url", f"http://127.0.0.1:{port}", "--", "-" + "A" * 21)

    assert dashed.returncode == 1
    assert dashed.stderr.startswith("srstore: error: cannot reach the srstore API"), shown(dashed)
