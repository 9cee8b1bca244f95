"""The published OpenAPI schema: FastAPI's, with one id per operation and only real errors.

FastAPI documents a ``422`` with its own ``{"detail": [...]}`` body on every route that takes a
parameter. srstore answers ``422`` with the error envelope (``app.errors``), and only where a
route declares it, so the framework's entries are dropped. A GET route that also answers HEAD
would give both operations one id: the HEAD one is named ``head_...``.
"""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI

from app.access import required_scope
from app.errors import error_responses
from config.settings import Settings

SCHEME = "apiKey"
WHOAMI = "/v1/access"
_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`srk_...`, see README, Keys and access) or SRSTORE_ADMIN_TOKEN."
    " Each operation lists the scope it needs; a key with `admin` has every scope.",
}

_FRAMEWORK_SCHEMAS = ("HTTPValidationError", "ValidationError")
_FRAMEWORK_422 = "#/components/schemas/HTTPValidationError"


def publish_envelope_only(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # GET and HEAD of one route share an id until _name_head_operations runs.
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                schema = generate()
            _drop_framework_errors(schema)
            _name_head_operations(schema)
            _declare_security(schema, settings)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_framework_errors(schema: dict[str, Any]) -> None:
    for operations in schema["paths"].values():
        for operation in operations.values():
            content = operation["responses"].get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == _FRAMEWORK_422:
                del operation["responses"]["422"]
    for name in _FRAMEWORK_SCHEMAS:
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def _name_head_operations(schema: dict[str, Any]) -> None:
    for operations in schema["paths"].values():
        head = operations.get("head")
        if head is not None and head.get("operationId") == operations.get("get", {}).get(
            "operationId"
        ):
            head["operationId"] = "head_" + head["operationId"].removeprefix("get_")


def _declare_security(schema: dict[str, Any], settings: Settings) -> None:
    """Each operation's scope (the same table ``RequestGate`` enforces) and its refusals.

    A public read lists an empty requirement beside the key: it may be made without one.
    """
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = _SCHEME
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            scope = required_scope(method.upper(), path)
            if path == WHOAMI:
                operation["security"] = [{SCHEME: []}, {}]  # any key, or none
            if scope is None:
                continue
            requirement: list[dict[str, list[str]]] = [{SCHEME: [scope]}]
            if scope == "read" and settings.public_read:
                requirement.append({})
            operation["security"] = requirement
            refusals = error_responses(401, 403)
            for status, response in refusals.items():
                operation["responses"].setdefault(str(status), _jsonable(response))


def _jsonable(response: dict[str, Any]) -> dict[str, Any]:
    """``error_responses`` names the envelope model; the schema holds its reference."""
    shown = {k: v for k, v in response.items() if k != "model"}
    shown["content"] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
    }
    return shown
