"""Build the FastAPI app: wire storage, cache, models and renderer from one Settings object."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from redis.exceptions import RedisError

from apikeys import make_key_store, make_quotas
from app.access import Access
from app.api import access, admin, health, images, keys
from app.api.console import mount_console
from app.api.console import router as console_router
from app.errors import KeysUnavailable, error_responses, install_error_handlers
from app.middleware import RequestGate, RequestId, ResponseHeadersAndMetrics
from app.openapi import publish_envelope_only
from app.routing import answer_head_wherever_get, protect_docs
from app.services.compaction import BackgroundCompactions, QueueCompactions
from app.services.costs import CostReport
from app.services.delivery import Renderer
from app.services.images import ImageService
from app.services.models import ActiveModel, ModelAdmin
from app.services.queue import QueueRenderer
from cache import make_cache, make_leases
from config.logs import configure_logging
from config.settings import Settings, SettingsError, load_settings, unknown_variables
from keyspace import LEGACY_NAMES, adopt_legacy_names, connect
from ledger import make_ledger
from models.control import ControlUnavailable, make_control
from models.registry import ModelRef, ModelRegistry
from models.weights import find_weights, list_weights
from render.admission import Backlog, RenderSlots, share_of
from render.compaction import Compactor
from render.costs import CostFlusher
from render.inference import InferenceEngine, LocalRenderer, keep_render_heap
from storage import S3Store, StorageUnavailable, make_store

log = logging.getLogger("srstore")


def preferred_model(settings: Settings) -> ModelRef | None:
    """What a fresh fleet activates: the configured model, at its newest shipped version."""
    weights = find_weights(settings.weights_dir, settings.model, settings.model_version)
    if weights is None:
        log.warning("no %s weights in %s: serving bicubic", settings.model, settings.weights_dir)
        return None
    return ModelRef(weights.name, weights.version)


async def adopt_legacy_redis_names(url: str, cluster: bool) -> None:
    """Keep the ledger and the model pointer of a Redis written before the hash-tagged names."""
    client = connect(url, cluster, socket_connect_timeout=1, socket_timeout=2)
    try:
        for old in await adopt_legacy_names(client):
            log.info("renamed the Redis key %s to %s", old, LEGACY_NAMES[old])
    except RedisError as exc:
        log.warning("could not look for keys under their old names: %s", exc)
    finally:
        await client.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.inference != "queue":  # queue mode renders on the workers, not here
            keep_render_heap(settings)
        # Object-store and ledger calls (asyncio.to_thread) and the readiness pings run on
        # the default executor; CPU work has its own pool (app.services.work).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.io_threads, thread_name_prefix="io")
        )
        store = make_store(settings)
        control = make_control(settings)
        registry = ModelRegistry(store)
        model_admin = ModelAdmin(registry, control, settings.codec)
        if settings.redis_url:
            await adopt_legacy_redis_names(settings.redis_url, settings.redis_cluster)
        try:
            if isinstance(store, S3Store):
                await store.ensure_bucket()
            await model_admin.bootstrap(
                list_weights(settings.weights_dir), preferred_model(settings)
            )
        except (StorageUnavailable, ControlUnavailable) as exc:
            log.warning("model registry not reachable at start: %s", exc)
        cache = make_cache(settings)
        ledger = make_ledger(settings)
        key_store = make_key_store(settings)
        quotas = make_quotas(settings)
        app.state.access = Access(settings, key_store, quotas)
        renderer: Renderer
        compactions: BackgroundCompactions | QueueCompactions
        if settings.inference == "queue":
            renderer = QueueRenderer(settings, cache)
            await renderer.start()
            # Workers render and compact: this process loads no model.
            active = ActiveModel(control, settings.model_poll_seconds)
            compactions = QueueCompactions(settings, store, active)
        else:
            engine = InferenceEngine.from_settings(registry, settings)
            backlog = Backlog(fallback_seconds=settings.request_deadline_seconds)
            slots = render_slots(settings, settings.render_threads, backlog)
            heavy_slots = render_slots(settings, 1, backlog)
            local = LocalRenderer(engine, store, cache, slots, heavy_slots)
            renderer = local
            active = ActiveModel(control, settings.model_poll_seconds, preload=local.preload)
            compactor = Compactor(
                settings,
                store,
                cache,
                ledger,
                engine.models,
                make_leases(settings),
                settings.compaction_threads,
            )
            compactions = BackgroundCompactions(settings, compactor, store, active, slots)
        await active.start()
        app.state.settings = settings
        app.state.models = active
        app.state.model_admin = model_admin
        image_service = ImageService(settings, store, cache, renderer, active, ledger, compactions)
        app.state.image_service = image_service
        await compactions.start()
        if image_service.tiering is not None:
            await image_service.tiering.start()
        await image_service.dependencies.start()
        flusher = CostFlusher(
            ledger,
            cache,
            settings.prices,
            settings.cost_window_seconds,
            settings.cost_flush_seconds,
        )
        app.state.costs = CostReport(settings, ledger, flusher)
        await flusher.start()
        log.info(
            "srstore ready: %s, %s, model %s",
            type(store).__name__,
            type(cache).__name__,
            active.label,
        )
        await say_access(app.state.access)
        try:
            yield
        finally:
            await flusher.stop()
            await active.stop()
            if image_service.tiering is not None:
                await image_service.tiering.stop()
            await compactions.close()
            await image_service.dependencies.stop()
            await renderer.close()
            await asyncio.to_thread(image_service.decoding.close)
            await asyncio.to_thread(image_service.cpu.close)
            await control.close()
            for closeable in (cache, ledger, key_store, quotas):
                close = getattr(closeable, "close", None)
                if close is not None:
                    await close()

    # /docs and /redoc load their scripts and styles from this process, not from a CDN.
    app = FastAPIOffline(
        title="srstore",
        version="0.1.0",
        summary="Stores images at 1/16 of their pixels and rebuilds them with super-resolution.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        responses=error_responses(431, 500),
    )
    install_error_handlers(app)
    routers = (images.router, admin.router, keys.router, access.router, health.router)
    for router in (*routers, console_router):
        answer_head_wherever_get(router)
    answer_head_wherever_get(app)  # the documentation pages
    protect_docs(app)
    app.include_router(images.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(access.router)
    app.include_router(health.router)
    mount_console(app)
    app.add_middleware(RequestGate, settings=settings)
    app.add_middleware(ResponseHeadersAndMetrics)
    app.add_middleware(RequestId)
    publish_envelope_only(app, settings)
    return app


async def say_access(access: Access) -> None:
    """Start-up says who may upload, list and delete: keys, or loopback only (protected)."""
    try:
        log.info("access: %s", await access.describe())
    except KeysUnavailable:
        log.warning("access: the key store is unavailable: keyed routes answer 503 until it is")


def render_slots(settings: Settings, concurrent: int, backlog: Backlog) -> RenderSlots:
    """The embedded default's admission control for one lane, on the bounds queue mode uses."""
    return RenderSlots(
        concurrent=concurrent,
        max_waiting=settings.queue_max_length,
        wait_seconds=settings.request_deadline_seconds,
        backlog=backlog,
        per_client=share_of(concurrent, settings.cpu_client_share),
    )


def _operation_id(route: APIRoute) -> str:
    """The route's name (``get_image``, ``head_image``): unique, and readable in clients."""
    return route.name


def app_from_environment(environ: Mapping[str, str]) -> FastAPI:
    """The ASGI app of ``srstore serve`` and of ``uvicorn app.main:app``, logging configured."""
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        raise SystemExit(exc.report()) from None
    configure_logging(settings.log_format, settings.log_level)
    for problem in unknown_variables(environ):
        log.warning("%s: ignored", problem)
    return create_app(settings)


app = app_from_environment(os.environ)
