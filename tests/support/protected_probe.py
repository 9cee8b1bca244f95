"""Run inside a network namespace by tests/test_access.py: a server bound to every address,
called from loopback and from a non-loopback address of the namespace.

Prints one JSON object: the status of each call, by the address it came from.
"""

from __future__ import annotations

import io
import json
import sys

import httpx
from PIL import Image

from tests.support.process import start_api
from tests.support.servers import free_port


def main(data_dir: str, outside: str) -> None:
    port = free_port()
    env = {"SRSTORE_DATA_DIR": data_dir, "SRSTORE_HOST": "0.0.0.0", "SRSTORE_PORT": str(port)}
    api = start_api(env, port=port, host="0.0.0.0")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, "PNG")
    png = {"content": buffer.getvalue(), "headers": {"content-type": "image/png"}}
    answers: dict[str, dict[str, object]] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as local:
            image = local.post("/v1/images", **png).json()["id"]
            answers["loopback"] = {"upload": 201, "id": image}
        with httpx.Client(base_url=f"http://{outside}:{port}") as remote:
            answers["outside"] = {
                "upload": remote.post("/v1/images", **png).status_code,
                "list": remote.get("/v1/images").status_code,
                "delete": remote.delete(f"/v1/images/{image}").status_code,
                "read": remote.get(f"/v1/images/{image}").status_code,
                "message": remote.get("/v1/images").json()["error"]["message"],
            }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as local:
            answers["loopback"]["delete"] = local.delete(f"/v1/images/{image}").status_code
    finally:
        api.stop()
    print(json.dumps(answers))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
