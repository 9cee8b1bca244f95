"""The published API description is valid, truthful about errors, and works offline."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from config.settings import Settings
from tests.conftest import serving

TOKEN = "a-test-admin-token-of-some-length"


@pytest.fixture
async def documented(tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data", admin_token=TOKEN)  # type: ignore[arg-type]
    async with serving(settings) as (_, client):
        schema = (await client.get("/openapi.json")).json()
        yield client, schema


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def envelope_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The ErrorEnvelope JSON schema, with its references resolvable."""
    return {"$ref": "#/components/schemas/ErrorEnvelope", "components": schema["components"]}


async def test_the_schema_is_valid_openapi_with_one_id_per_operation(documented: Any) -> None:
    _, schema = documented

    validate(schema)
    ids = Counter(op["operationId"] for _, _, op in operations(schema))
    assert ids and max(ids.values()) == 1, ids
    assert {"get_image", "head_image"} <= set(ids)


async def test_every_error_is_documented_with_the_real_envelope(documented: Any) -> None:
    _, schema = documented

    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorEnvelope", (method, path, status)
    assert "HTTPValidationError" not in str(schema)


EXPECTED_SCOPES = {
    ("post", "/v1/images"): "upload",
    ("get", "/v1/images"): "list",
    ("get", "/v1/images/{image_id}"): "read",
    ("head", "/v1/images/{image_id}"): "read",
    ("get", "/v1/images/{image_id}/meta"): "read",
    ("get", "/v1/images/{image_id}/stored"): "read",
    ("delete", "/v1/images/{image_id}"): "delete",
    ("get", "/v1/admin/models"): "admin",
    ("post", "/v1/admin/keys"): "admin",
    ("delete", "/v1/admin/keys/{key_id}"): "admin",
}


async def test_every_api_route_declares_the_key_scope_it_needs(documented: Any) -> None:
    _, schema = documented

    (name,) = schema["components"]["securitySchemes"]
    assert schema["components"]["securitySchemes"][name]["scheme"] == "bearer"
    for method, path, operation in operations(schema):
        if not path.startswith("/v1/"):
            assert "security" not in operation, path
            continue
        if path == "/v1/access":  # what may I do: asked with any key, or none
            assert operation["security"] == [{name: []}, {}]
            continue
        (scopes,) = [r[name] for r in operation["security"] if r]
        assert len(scopes) == 1, (method, path)
        # Reads are public by default: an empty requirement says a key is optional.
        assert ({} in operation["security"]) == (scopes == ["read"]), (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
        expected = EXPECTED_SCOPES.get((method, path))
        assert expected in (None, scopes[0]), (method, path, scopes)
    seen = {(m, p) for m, p, _ in operations(schema)}
    assert set(EXPECTED_SCOPES) <= seen


async def test_each_error_a_route_returns_is_one_it_documents(
    documented: Any, photo_bytes: bytes
) -> None:
    client, schema = documented
    created = (
        await client.post("/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"})
    ).json()
    unknown = "A" * 22
    admin = {"authorization": f"Bearer {TOKEN}"}
    calls = [
        ("post", "/v1/images", {"content": b"text", "headers": {"content-type": "text/plain"}}),
        (
            "post",
            "/v1/images",
            {"content": b"not an image", "headers": {"content-type": "image/png"}},
        ),
        ("post", "/v1/images", {"files": {"other": ("a.png", b"x")}}),
        ("get", "/v1/images/{image_id}", {"path": "/v1/images/bad id"}),
        ("get", "/v1/images/{image_id}", {"path": f"/v1/images/{unknown}"}),
        ("get", "/v1/images/{image_id}", {"path": f"/v1/images/{created['id']}?quality=0"}),
        ("head", "/v1/images/{image_id}", {"path": f"/v1/images/{unknown}"}),
        ("get", "/v1/images/{image_id}/meta", {"path": f"/v1/images/{unknown}/meta"}),
        ("get", "/v1/images/{image_id}/stored", {"path": "/v1/images/bad/stored"}),
        ("delete", "/v1/images/{image_id}", {"path": f"/v1/images/{unknown}"}),
        ("get", "/v1/admin/models", {}),
        (
            "put",
            "/v1/admin/models/active",
            {"json": {"name": "espcn", "version": 99}, "headers": admin},
        ),
        ("put", "/v1/admin/models/active", {"json": {"name": "NO"}, "headers": admin}),
        ("post", "/v1/admin/models/rollback", {"headers": admin}),
    ]
    for method, route, call in calls:
        url = call.pop("path", route)
        answer = await client.request(method.upper(), url, **call)
        documented_statuses = schema["paths"][route][method]["responses"]

        assert answer.status_code >= 400, (method, url)
        assert str(answer.status_code) in documented_statuses, (method, url, answer.status_code)
        if method != "head":
            jsonschema.validate(answer.json(), envelope_schema(schema))


async def test_the_docs_pages_load_their_assets_from_this_server(documented: Any) -> None:
    client, _ = documented

    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert not [a for a in assets if a.startswith(("http:", "https:", "//"))], (page, assets)
        assert any(a.endswith(".js") for a in assets), page
        for asset in assets:
            fetched = await client.get(asset)
            assert fetched.status_code == httpx.codes.OK and fetched.content, asset
