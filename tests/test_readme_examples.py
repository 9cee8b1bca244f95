"""The README's curl examples, run verbatim against `srstore serve`, print what their comments say.

Each comment's claims are read from its words: ``602x402 JPEG`` (the file's size and format),
``X-Model-Version: none`` (the header of the same request), ``201 + JSON with "id"``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.process import ApiProcess, start_api
from tests.support.servers import free_port

ROOT = Path(__file__).parent.parent
README_URL = "http://127.0.0.1:8000"
SIZE_AND_FORMAT = re.compile(r"\b(\d+)x(\d+) (JPEG|PNG|WebP|AVIF)\b")
MODEL_HEADER = re.compile(r"X-Model-Version: (\S+)")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """`make run`'s server: the embedded default with the shipped weights, on a free port."""
    folder = tmp_path_factory.mktemp("readme")
    env = {"SRSTORE_DATA_DIR": str(folder / "data")}
    api = start_api(env, port=free_port(), log_path=folder / "serve.log")
    yield api
    api.stop()


def curl_examples() -> list[tuple[str, str]]:
    """(command, comment) for each command of the README block that starts with curl."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if b.startswith("ID=$(curl -sF file=@")]
    commands = block.replace("\\\n", " ").splitlines()
    return [
        (command.strip(), comment.strip())
        for command, _, comment in (line.partition("  # ") for line in commands)
        if command.strip()
    ]


def settled(api: ApiProcess, image_id: str) -> None:
    """Wait (by observing /meta) until the upload's receipt is no longer pending."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        meta = httpx.get(f"{api.url}/v1/images/{image_id}/meta", timeout=30).json()
        if "pending" not in json.dumps(meta):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the receipt of {image_id} stayed pending: {meta}")


def request_of(command: str, url: str) -> tuple[str, dict[str, str]]:
    """The URL and headers a curl command sends, to ask the same again and read the headers."""
    (path,) = re.findall(r'"?' + re.escape(README_URL) + r'([^"\s]*)"?', command)
    headers = dict(h.split(": ", 1) for h in re.findall(r"-H '([^']*)'", command))
    return url + path, headers


def test_the_curl_examples_print_what_their_comments_say(api: ApiProcess, tmp_path: Path) -> None:
    examples = curl_examples()
    shell = dict(os.environ)
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the README's paths, from a scratch folder
    checked: list[str] = []

    for command, comment in examples:
        assert command.startswith(("curl ", "ID=$(curl ")), command
        script = command.replace(README_URL, api.url)
        if command.startswith("ID="):
            script += '\necho "$ID"'  # what the reader's shell now holds
        ran = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            capture_output=True,
            text=True,
            env=shell,
            cwd=tmp_path,
            timeout=300,
        )
        assert ran.returncode == 0, f"{command}\n{ran.stdout}\n{ran.stderr}"
        if command.startswith("ID="):
            assert comment == '201 + JSON with "id"'
            shell["ID"] = ran.stdout.strip()
            assert re.fullmatch(r"[\w-]{22}", shell["ID"]), ran.stdout
            settled(api, shell["ID"])
            checked.append(comment)
            continue
        output = tmp_path / re.findall(r"-o (\S+)", command)[0]
        url, headers = request_of(command.replace("$ID", shell["ID"]), api.url)
        answer = httpx.get(url, headers=headers, timeout=120)
        sizes, models = SIZE_AND_FORMAT.findall(comment), MODEL_HEADER.findall(comment)
        assert sizes, f"a comment that does not say what comes back: {comment}"
        with Image.open(output) as image:
            (width, height, fmt) = sizes[0]
            assert (image.width, image.height, image.format) == (
                int(width),
                int(height),
                fmt.upper(),
            ), f"{command}  # {comment}"
        for model in models:
            assert answer.headers["x-model-version"] == model, f"{command}  # {comment}"
        assert answer.content == output.read_bytes(), "asked again, the same bytes"
        checked.append(comment)

    assert len(checked) == len(examples) >= 5
