"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import metrics
from app.deps import AccessDep, CostReportDep, ImageServiceDep
from app.errors import KeysUnavailable, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503), summary="Storage, cache and model are ready")
async def readyz(images: ImageServiceDep, access: AccessDep) -> dict[str, str]:
    ready = await images.check_ready()
    try:
        regime = await access.describe()
    except KeysUnavailable:
        regime = "unknown: the key store is unavailable"
    return {"status": "ready", **ready, "access": regime}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(images: ImageServiceDep, costs: CostReportDep) -> Response:
    snapshot = dataclasses.replace(
        await images.snapshot(),
        spending=await costs.spending(),
        prices=costs.settings.prices,
        window_seconds=costs.settings.cost_window_seconds,
    )
    # Off the event loop: a scrape never holds up the requests being served meanwhile.
    body = await asyncio.to_thread(metrics.exposition, snapshot)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
