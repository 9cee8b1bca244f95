"""``/v1/admin``: model versions for admins, behind a bearer token.

The token is checked by :class:`app.middleware.RequestGate` before any body is read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

<<<<<<< HEAD
from app.deps import SettingsDep
from app.errors import AdminDisabled, Unauthorized, error_responses
=======
>>>>>>> main
from app.services.models import ModelAdmin
from models.control import SwapRecord
from models.registry import ModelRef

_BEARER = HTTPBearer(auto_error=False, description="The value of SRSTORE_ADMIN_TOKEN.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]

<<<<<<< HEAD

def require_admin(settings: SettingsDep, credentials: BearerDep) -> None:
    """403 while no token is configured; 401 for a missing or wrong one (constant-time)."""
    if settings.admin_token is None:
        raise AdminDisabled("the admin API is off: set SRSTORE_ADMIN_TOKEN to enable it")
    given = credentials.credentials.strip() if credentials else ""
    expected = settings.admin_token.get_secret_value().encode()
    if not credentials or not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("a valid bearer token is required")


=======
>>>>>>> main
def get_model_admin(request: Request) -> ModelAdmin:
    return request.app.state.model_admin  # type: ignore[no-any-return]


ModelAdminDep = Annotated[ModelAdmin, Depends(get_model_admin)]
<<<<<<< HEAD
router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401, 403),
)
=======
router = APIRouter(prefix="/v1/admin", tags=["admin"])
>>>>>>> main


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
    weights: Annotated[UploadFile, File(description="PyTorch state dict (.pt)")],
    card: Annotated[str, Form(description="Model card JSON with at least name and version")],
) -> dict[str, Any]:
    entry = await admin.upload(await weights.read(), card)
    return {"name": entry.ref.name, "version": entry.ref.version, "card": entry.card}


@router.put(
    "/models/active",
    responses=error_responses(404, 409, 422, 503),
    summary="Activate a version across the fleet",
)
async def activate_model(admin: ModelAdminDep, body: Activation) -> dict[str, Any]:
    record = await admin.activate(ModelRef(body.name, body.version), body.force)
    return swap_response(record, ModelRef(body.name, body.version))


@router.post(
    "/models/rollback",
    responses=error_responses(409, 503),
    summary="Go back to the previously active version",
)
async def rollback_model(admin: ModelAdminDep) -> dict[str, Any]:
    record = await admin.rollback()
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
