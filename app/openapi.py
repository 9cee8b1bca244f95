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

_FRAMEWORK_SCHEMAS = ("HTTPValidationError", "ValidationError")
_FRAMEWORK_422 = "#/components/schemas/HTTPValidationError"


def publish_envelope_only(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # GET and HEAD of one route share an id until _name_head_operations runs.
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                schema = generate()
            _drop_framework_errors(schema)
            _name_head_operations(schema)
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
