"""``/v1/admin``: model versions, for a key with the ``admin`` scope or SRSTORE_ADMIN_TOKEN.

The caller is checked by :class:`app.middleware.RequestGate` before any body is read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile, status
from pydantic import BaseModel, Field

from app.audit import audit
from app.deps import PrincipalDep
from app.errors import error_responses
from app.services.models import ModelAdmin
from models.control import SwapRecord
from models.registry import ModelRef


async def get_model_admin(request: Request) -> ModelAdmin:
    return request.app.state.model_admin  # type: ignore[no-any-return]


ModelAdminDep = Annotated[ModelAdmin, Depends(get_model_admin)]
router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
)


class Activation(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9]{1,32}$")
    version: int = Field(ge=1)
    force: bool = False


@router.get(
    "/models",
    responses=error_responses(503),
    summary="Every model version with its card, and which one is active",
)
async def list_models(admin: ModelAdminDep) -> dict[str, Any]:
    return await admin.overview()


@router.post(
    "/models",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, 422, 503),
    summary="Upload a weight file and its card; it is loaded and scored before it is kept",
)
async def upload_model(
    admin: ModelAdminDep,
    principal: PrincipalDep,
    weights: Annotated[UploadFile, File(description="PyTorch state dict (.pt)")],
    card: Annotated[str, Form(description="Model card JSON with at least name and version")],
) -> dict[str, Any]:
    entry = await admin.upload(await weights.read(), card)
    audit("model.upload", principal, model=entry.ref.label)
    return {"name": entry.ref.name, "version": entry.ref.version, "card": entry.card}


@router.put(
    "/models/active",
    responses=error_responses(404, 409, 422, 503),
    summary="Activate a version across the fleet",
)
async def activate_model(
    admin: ModelAdminDep, body: Activation, principal: PrincipalDep
) -> dict[str, Any]:
    record = await admin.activate(ModelRef(body.name, body.version), body.force)
    audit("model.activate", principal, model=f"{body.name}:{body.version}", force=body.force)
    return swap_response(record, ModelRef(body.name, body.version))


@router.post(
    "/models/rollback",
    responses=error_responses(409, 503),
    summary="Go back to the previously active version",
)
async def rollback_model(admin: ModelAdminDep, principal: PrincipalDep) -> dict[str, Any]:
    record = await admin.rollback()
    audit("model.rollback", principal, model=record.to_label)
    return swap_response(record, ModelRef.parse(record.to_label))


@router.get(
    "/models/history",
    responses=error_responses(503),
    summary="Every swap: when, from, to, forced or not",
)
async def model_history(admin: ModelAdminDep) -> dict[str, Any]:
    return {"swaps": [vars(r) for r in await admin.control.history()]}


def swap_response(record: SwapRecord | None, target: ModelRef) -> dict[str, Any]:
    return {
        "active": {"name": target.name, "version": target.version},
        "changed": record is not None,
        "swap": vars(record) if record else None,
    }
