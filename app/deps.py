"""Request dependencies as ``Annotated`` aliases, so tests can override them.

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its thread pool, two thread hops on every request (a tenth of a cache hit's CPU).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.access import ANONYMOUS, Access, Principal
from app.services.costs import CostReport
from app.services.images import ImageService
from config.settings import Settings


async def get_image_service(request: Request) -> ImageService:
    return request.app.state.image_service  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_client(request: Request) -> str:
    """Who a request's work is charged to: its API key when it sent one, else its address."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is not None and principal.key_id is not None:
        return f"key:{principal.key_id}"
    return request.client.host if request.client is not None else "unknown"


async def get_cost_report(request: Request) -> CostReport:
    return request.app.state.costs  # type: ignore[no-any-return]


async def get_access(request: Request) -> Access:
    return request.app.state.access  # type: ignore[no-any-return]


async def get_principal(request: Request) -> Principal:
    """Who ``RequestGate`` let in; anonymous for a public read it did not look at."""
    return request.scope.get("state", {}).get("principal", ANONYMOUS)  # type: ignore[no-any-return]


CostReportDep = Annotated[CostReport, Depends(get_cost_report)]
ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
ClientDep = Annotated[str, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AccessDep = Annotated[Access, Depends(get_access)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
