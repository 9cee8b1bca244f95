"""Request dependencies as ``Annotated`` aliases, so tests can override them.

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its thread pool, two thread hops on every request (a tenth of a cache hit's CPU).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.services.costs import CostReport
from app.services.images import ImageService
from config.settings import Settings


async def get_image_service(request: Request) -> ImageService:
    return request.app.state.image_service  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_cost_report(request: Request) -> CostReport:
    return request.app.state.costs  # type: ignore[no-any-return]


CostReportDep = Annotated[CostReport, Depends(get_cost_report)]
ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
