"""Request dependencies as ``Annotated`` aliases, so tests can override them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.services.costs import CostReport
from app.services.images import ImageService
from config.settings import Settings


def get_image_service(request: Request) -> ImageService:
    return request.app.state.image_service  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_cost_report(request: Request) -> CostReport:
    return request.app.state.costs  # type: ignore[no-any-return]


CostReportDep = Annotated[CostReport, Depends(get_cost_report)]
ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
