"""Request dependencies as ``Annotated`` aliases, so tests can override them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.access import ANONYMOUS, Access, Principal
from app.services.images import ImageService
from config.settings import Settings


def get_image_service(request: Request) -> ImageService:
    return request.app.state.image_service  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_access(request: Request) -> Access:
    return request.app.state.access  # type: ignore[no-any-return]


def get_principal(request: Request) -> Principal:
    """Who ``RequestGate`` let in; anonymous for a public read it did not look at."""
    return request.scope.get("state", {}).get("principal", ANONYMOUS)  # type: ignore[no-any-return]


ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AccessDep = Annotated[Access, Depends(get_access)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
