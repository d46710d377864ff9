"""Error responses that never turn bad input into a 500."""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


def _encodable(value: Any) -> Any:
    # Lone surrogates in the client's input cannot be written back as UTF-8 JSON.
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    if isinstance(value, dict):
        return {key: _encodable(item) for key, item in value.items()}
    return value


async def validation_failed(request: Request, error: Exception) -> JSONResponse:
    """422 naming each field and the reason; the offending input is not echoed back (it may be a
    password or megabytes long)."""
    assert isinstance(error, RequestValidationError)
    details = [
        {key: value for key, value in item.items() if key in ("type", "loc", "msg", "ctx")}
        for item in error.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": _encodable(jsonable_encoder(details))},
    )


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette answers an unparsable body (e.g. not UTF-8) with 400; the contract says 422."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == status.HTTP_400_BAD_REQUEST and request.url.path.startswith("/api/"):
        detail = [{"type": "body_unparsable", "loc": ["body"], "msg": str(error.detail)}]
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": detail}
        )
    return await http_exception_handler(request, error)


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    # A database outage is not a bug in the request: tell clients and load balancers to retry.
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "database unavailable"},
    )
