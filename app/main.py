"""Build the FastAPI app: wire storage, cache, models and renderer from one Settings object."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from app.api import admin, health, images
from app.api.console import mount_console
from app.errors import error_responses, install_error_handlers
from app.middleware import RequestGate, RequestId, ResponseHeadersAndMetrics
from app.openapi import publish_envelope_only
from app.services.compaction import BackgroundCompactions, QueueCompactions
from app.services.costs import CostReport
from app.services.delivery import Renderer
from app.services.images import ImageService
from app.services.models import ActiveModel, ModelAdmin
from app.services.queue import QueueRenderer
from cache import make_cache
from config.logs import configure_logging
from config.settings import Settings, SettingsError, load_settings, unknown_variables
from ledger import make_ledger
from models.control import ControlUnavailable, make_control
from models.registry import ModelRef, ModelRegistry
from models.weights import find_weights, list_weights
from render.admission import Backlog, RenderSlots
from render.compaction import Compactor
from render.costs import CostFlusher
from render.inference import InferenceEngine, LocalRenderer
from storage import S3Store, StorageUnavailable, make_store

log = logging.getLogger("srstore")


def preferred_model(settings: Settings) -> ModelRef | None:
    """What a fresh fleet activates: the configured model, at its newest shipped version."""
    weights = find_weights(settings.weights_dir, settings.model, settings.model_version)
    if weights is None:
        log.warning("no %s weights in %s: serving bicubic", settings.model, settings.weights_dir)
        return None
    return ModelRef(weights.name, weights.version)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = make_store(settings)
        control = make_control(settings)
        registry = ModelRegistry(store)
        model_admin = ModelAdmin(registry, control, settings.codec)
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
            slots = render_slots(settings)
            local = LocalRenderer(engine, store, cache, slots)
            renderer = local
            active = ActiveModel(control, settings.model_poll_seconds, preload=local.preload)
            compactor = Compactor(
                settings, store, cache, ledger, engine.models, settings.compaction_threads
            )
            compactions = BackgroundCompactions(settings, compactor, store, active, slots)
        await active.start()
        app.state.settings = settings
        app.state.models = active
        app.state.model_admin = model_admin
        image_service = ImageService(settings, store, cache, renderer, active, ledger, compactions)
        app.state.image_service = image_service
        await compactions.start()
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
        try:
            yield
        finally:
            await flusher.stop()
            await active.stop()
            await compactions.close()
            await image_service.dependencies.stop()
            await renderer.close()
            await asyncio.to_thread(image_service.decoding.close)
            await control.close()
            for closeable in (cache, ledger):
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
        responses=error_responses(500),
    )
    install_error_handlers(app)
    app.include_router(images.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    mount_console(app)
    app.add_middleware(RequestGate, settings=settings)
    app.add_middleware(ResponseHeadersAndMetrics)
    app.add_middleware(RequestId)
    publish_envelope_only(app)
    return app


def render_slots(settings: Settings) -> RenderSlots:
    """The embedded default's admission control, on the bounds queue mode uses."""
    return RenderSlots(
        concurrent=settings.render_threads,
        max_waiting=settings.queue_max_length,
        wait_seconds=settings.request_deadline_seconds,
        backlog=Backlog(fallback_seconds=settings.request_deadline_seconds),
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
