"""Request dependencies as ``Annotated`` aliases, so tests can override them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.services.images import ImageService
from config.settings import Settings


def get_image_service(request: Request) -> ImageService:
    return request.app.state.image_service  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_client(request: Request) -> str:
    """Who a request's work is charged to: its address (an API key, once keys exist)."""
    return request.client.host if request.client is not None else "unknown"


ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
ClientDep = Annotated[str, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
