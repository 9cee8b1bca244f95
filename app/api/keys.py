"""``/v1/admin/keys``: create, list and revoke API keys (the ``admin`` scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, Field

from apikeys import DEFAULT_TENANT, InvalidKeySpec, KeyStore, Limits, Scope, mint
from app.audit import audit
from app.deps import AccessDep, PrincipalDep
from app.errors import NotFound, Unprocessable, error_responses

router = APIRouter(prefix="/v1/admin/keys", tags=["keys"], responses=error_responses(503))


async def get_key_store(request: Request) -> KeyStore:
    return request.app.state.access.store  # type: ignore[no-any-return]


KeyStoreDep = Annotated[KeyStore, Depends(get_key_store)]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{10}$", description="The key's public id.")]


class KeyLimits(BaseModel):
    """Per-key overrides of the SRSTORE_QUOTA_* settings (omitted: the setting's)."""

    uploads_per_minute: int | None = Field(None, ge=0)
    upload_bytes_per_day: int | None = Field(None, ge=0)
    cpu_seconds_per_hour: float | None = Field(None, ge=0)


class NewKey(BaseModel):
    scopes: list[Scope] = Field(min_length=1, description="read, upload, list, delete, admin.")
    tenant: str = Field(
        DEFAULT_TENANT, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Owner of uploads."
    )
    name: str = Field("", max_length=100, description="A label for people.")
    costly_options: bool = Field(False, description="May ask uploads for policy= and floor=.")
    limits: KeyLimits = Field(default_factory=KeyLimits)


class CreatedKey(BaseModel):
    id: str
    key: str = Field(description="The secret, shown this once: only its hash is kept.")
    scopes: list[Scope]
    tenant: str
    name: str
    costly_options: bool


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedKey,
    responses=error_responses(422),
    summary="Create a key; the answer holds the secret, which is never shown again",
)
async def create_key(
    body: NewKey, store: KeyStoreDep, access: AccessDep, principal: PrincipalDep
) -> CreatedKey:
    try:
        key, record = mint(
            list(body.scopes),
            body.tenant,
            body.name,
            body.costly_options,
            Limits(**body.limits.model_dump()),
        )
    except InvalidKeySpec as exc:
        raise Unprocessable(str(exc)) from None
    await store.add(record)
    access.forget()
    audit("key.create", principal, target_key_id=record.id, scopes=list(record.scopes))
    return CreatedKey(
        id=record.id,
        key=key,
        scopes=list(record.scopes),
        tenant=record.tenant,
        name=record.name,
        costly_options=record.costly_options,
    )


@router.get("", summary="Every key (never a secret), revoked ones included")
async def list_keys(store: KeyStoreDep) -> dict[str, list[dict[str, Any]]]:
    return {"keys": [record.public() for record in await store.all()]}


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Revoke a key: every process refuses it within SRSTORE_KEY_CACHE_SECONDS",
)
async def revoke_key(
    key_id: KeyId, store: KeyStoreDep, access: AccessDep, principal: PrincipalDep
) -> Response:
    if await store.revoke(key_id) is None:
        raise NotFound("no key with this id")
    access.forget()
    audit("key.revoke", principal, target_key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
