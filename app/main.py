"""Build the FastAPI app: wire storage, cache, models and renderer from one Settings object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import admin, health, images
from app.api.console import mount_console
from app.errors import install_error_handlers
from app.middleware import RequestGate, ResponseHeadersAndMetrics
from app.services.images import ImageService, Renderer
from app.services.models import ActiveModel, ModelAdmin
from app.services.queue import QueueRenderer
from cache import make_cache
from config.settings import Settings
from ledger import make_ledger
from models.control import ControlUnavailable, make_control
from models.registry import ModelRef, ModelRegistry
from models.weights import find_weights, list_weights
from render.inference import InferenceEngine, LocalRenderer, ReadPath, UpscalerPool
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
        if settings.inference == "queue":
            renderer = QueueRenderer(settings, cache)
            await renderer.start()
            # Uploads are scored here, beside the original: see README, "Quality receipts".
            upscalers = UpscalerPool(registry, settings)
        else:
            local = LocalRenderer(InferenceEngine.from_settings(registry, settings), store, cache)
            renderer = local
            upscalers = local.engine.models
        active = ActiveModel(control, settings.model_poll_seconds, preload=upscalers.get)
        await active.start()
        scorer = ReadPath(upscalers, settings.output_encoding)
        app.state.settings = settings
        app.state.models = active
        app.state.model_admin = model_admin
        app.state.image_service = ImageService(
            settings, store, cache, renderer, active, ledger, scorer
        )
        log.info(
            "srstore ready: %s, %s, model %s",
            type(store).__name__,
            type(cache).__name__,
            active.label,
        )
        try:
            yield
        finally:
            await active.stop()
            await renderer.close()
            upscalers.close()
            await control.close()
            for closeable in (cache, ledger):
                close = getattr(closeable, "close", None)
                if close is not None:
                    await close()

    app = FastAPI(
        title="srstore",
        version="0.1.0",
        summary="Stores images at 1/16 of their pixels and rebuilds them with super-resolution.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(images.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    mount_console(app)
    app.add_middleware(RequestGate, settings=settings)
    app.add_middleware(ResponseHeadersAndMetrics)
    return app


app = create_app()
