"""srstore doctor: is this configuration valid, and does everything it names answer?

It checks, in order: the SRSTORE_* variables (each bad value named with what is allowed, each
unknown name flagged), the API the CLI commands would talk to (its /readyz: a server that is
not running fails the check, as it fails every `srstore images` command), then what start-up
would need: the object store, the cache (and queue), the active model's weights, who may call
the API (keys or the protected default), the inference device and the image codecs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import httpx
from PIL import features

from apikeys import KeyStoreUnavailable, make_key_store
from cache import CacheUnavailable, make_cache
from config.settings import Settings, SettingsError, load_settings, unknown_variables
from models.control import ControlUnavailable, make_control
from models.engine import resolve_device
from models.registry import ModelRegistry, UnknownModelVersion
from models.validation import InvalidWeights, load_checked
from models.weights import find_weights
from srstore.client import api_url
from storage import ObjectNotFound, S3Store, StorageUnavailable, make_store

Status = Literal["ok", "warn", "FAIL"]
# The Pillow feature each codec needs, as ``features.check`` names it.
_CODECS = {"jpeg": "jpg", "png": "zlib", "webp": "webp", "avif": "avif"}


@dataclass(frozen=True)
class Check:
    what: str
    status: Status
    detail: str


def diagnose(environ: Mapping[str, str], url: str | None = None) -> list[Check]:
    """Every check; ``url`` is the API's (``--url``), else SRSTORE_HOST and SRSTORE_PORT's."""
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        return [Check("configuration", "FAIL", p) for p in exc.problems] + _unknown(environ)
    checks = [Check("configuration", "ok", _mode(settings)), *_unknown(environ)]
    checks.append(_api(url or api_url(None, settings.host, settings.port)))
    checks += asyncio.run(_dependencies(settings))
    return [*checks, _device(settings), _codecs(settings)]


def failed(checks: list[Check]) -> bool:
    return any(check.status == "FAIL" for check in checks)


def as_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(check) for check in checks]


def _unknown(environ: Mapping[str, str]) -> list[Check]:
    return [Check("configuration", "FAIL", problem) for problem in unknown_variables(environ)]


def _mode(settings: Settings) -> str:
    store = f"S3 bucket {settings.s3_bucket}" if settings.s3_bucket else f"{settings.data_dir}/"
    cache = "Redis" if settings.redis_url else "in-process cache"
    return f"inference {settings.inference}, objects in {store}, {cache}"


def _api(url: str) -> Check:
    """Whether the API answers /readyz at ``url``, and what it says it serves with."""
    try:
        answer = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.ConnectError:
        return Check("api", "FAIL", f"nothing answers at {url}: is `srstore serve` running?")
    except httpx.HTTPError as exc:
        return Check("api", "FAIL", f"{url}/readyz: {type(exc).__name__}: {exc}")
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or not isinstance(body, dict):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        reason = error.get("message") if isinstance(error, dict) else None
        detail = f"{url}/readyz answered {answer.status_code}: {reason or answer.reason_phrase}"
        return Check("api", "FAIL", detail)
    served = ", ".join(f"{k} {v}" for k, v in body.items() if k in ("storage", "cache", "model"))
    return Check("api", "ok", f"{url} is ready ({served})")


async def _dependencies(settings: Settings) -> list[Check]:
    store = make_store(settings)
    checks = [await _store(store)]
    cache = make_cache(settings)
    try:
        await cache.ping()
        checks.append(Check("cache", "ok", type(cache).__name__))
    except CacheUnavailable as exc:
        checks.append(Check("cache", "FAIL", f"{exc} (reads would be served uncached)"))
    finally:
        close = getattr(cache, "close", None)
        if close is not None:
            await close()
    checks.append(await _model(settings, ModelRegistry(store)))
    checks.append(await _access(settings))
    return checks


async def _store(store: object) -> Check:
    name = type(store).__name__
    try:
        await store.ping()  # type: ignore[attr-defined]
    except ObjectNotFound:
        assert isinstance(store, S3Store)
        return Check("object store", "warn", f"bucket {store.bucket} is missing: serve makes it")
    except StorageUnavailable as exc:
        return Check("object store", "FAIL", str(exc))
    return Check("object store", "ok", name)


async def _model(settings: Settings, registry: ModelRegistry) -> Check:
    """Load the active version's weights, or those a first start would activate."""
    control = make_control(settings)
    try:
        active = await control.active()
        if active is not None:
            weights, where = await registry.weights(active), "active"
            label = active.label
        else:
            shipped = find_weights(settings.weights_dir, settings.model, settings.model_version)
            if shipped is None:
                return Check("model", "warn", f"no {settings.model} weights: serves bicubic")
            weights, where = shipped.path.read_bytes(), "activated on first start"
            label = f"{shipped.name}:{shipped.version}"
        network = load_checked(label.split(":")[0], weights)
    except (ControlUnavailable, StorageUnavailable, UnknownModelVersion, InvalidWeights) as exc:
        return Check("model", "FAIL", str(exc))
    finally:
        with contextlib.suppress(Exception):
            await control.close()
    parameters = sum(p.numel() for p in network.parameters())
    return Check("model", "ok", f"{label} ({where}) loads: {parameters} parameters")


async def _access(settings: Settings) -> Check:
    """Keys in force, or the protected default (uploads, listings, deletes from loopback)."""
    store = make_key_store(settings)
    try:
        keyed = await store.any_active()
    except KeyStoreUnavailable as exc:
        return Check("access", "FAIL", str(exc))
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()
    if keyed:
        return Check("access", "ok", "API keys: every upload, listing and delete needs one")
    detail = (
        "protected: no API key exists, so uploads, listings and deletes are accepted only "
        "from loopback (srstore keys create --scopes upload,read makes one)"
    )
    local = settings.host in ("127.0.0.1", "localhost", "::1")
    return Check("access", "ok" if local else "warn", detail)


def _device(settings: Settings) -> Check:
    import torch

    try:
        device = resolve_device(settings.device)
    except RuntimeError as exc:
        return Check("device", "FAIL", str(exc))
    if device.type == "cuda":
        detail = f"cuda: {torch.cuda.get_device_name(device)}, {settings.cuda_dtype}"
    else:
        detail = f"cpu: {torch.get_num_threads()} threads, torch {torch.__version__}"
    return Check("device", "ok", detail)


def _codecs(settings: Settings) -> Check:
    available = [name for name, feature in _CODECS.items() if features.check(feature)]
    missing = [name for name in _CODECS if name not in available]
    detail = ", ".join(available) + (f" (missing: {', '.join(missing)})" if missing else "")
    stored = "webp" if settings.stored_codec.startswith("webp") else settings.stored_codec
    if stored not in available:
        return Check("codecs", "FAIL", f"SRSTORE_STORED_CODEC={stored} is unavailable: {detail}")
    return Check("codecs", "ok", detail)
