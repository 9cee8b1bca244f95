"""``/v1/access``: who the caller is and what it may do (the console signs in with it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from apikeys import SCOPES
from app.deps import AccessDep
from app.errors import error_responses

router = APIRouter(prefix="/v1/access", tags=["keys"])


class Caller(BaseModel):
    key_id: str | None = Field(description="The key's public id; null without a key.")
    tenant: str | None = Field(description="Whose images it sees; null: every tenant's.")
    scopes: list[str] = Field(
        description="What it may do now, of read, upload, list, delete, admin."
    )
    access: str = Field(description="The fleet's regime: API keys, or the protected default.")


@router.get(
    "",
    response_model=Caller,
    responses=error_responses(401, 503),
    summary="What the caller (its key, or none) may do here",
)
async def whoami(
    request: Request,
    access: AccessDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    client = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for") or request.headers.get("forwarded")
    principal = await access.whoami(authorization, client, forwarded)
    return Caller(
        key_id=principal.key_id,
        tenant=principal.tenant,
        scopes=[s for s in SCOPES if s in principal.scopes],
        access=await access.describe(),
    )
