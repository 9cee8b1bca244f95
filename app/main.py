"""Build the FastAPI app: wire storage, cache and renderer from one Settings object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import health, images
from app.errors import install_error_handlers
from app.middleware import ResponseHeadersAndMetrics
from app.services.images import ImageService, Renderer
from app.services.inference import InferenceEngine, LocalRenderer
from app.services.queue import QueueRenderer
from app.settings import Settings
from cache import make_cache
from storage import S3Store, StorageUnavailable, make_store

log = logging.getLogger("srstore")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = make_store(settings)
        if isinstance(store, S3Store):
            try:
                await store.ensure_bucket()
            except StorageUnavailable as exc:
                log.warning("object store not reachable at start: %s", exc)
        cache = make_cache(settings)
        renderer: Renderer
        if settings.inference == "queue":
            renderer = QueueRenderer(settings, cache)
            await renderer.start()
        else:
            renderer = LocalRenderer(InferenceEngine.from_settings(settings), store, cache)
        app.state.settings = settings
        app.state.image_service = ImageService(settings, store, cache, renderer)
        log.info(
            "srstore ready: %s, %s, model %s",
            type(store).__name__,
            type(cache).__name__,
            renderer.model_label,
        )
        try:
            yield
        finally:
            await renderer.close()
            close = getattr(cache, "close", None)
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
    app.include_router(health.router)
    app.add_middleware(ResponseHeadersAndMetrics)
    return app


app = create_app()
