"""Error responses in OpenAI's shape, and the handlers that make every failure one of them.

A client never sees a traceback: validation errors name the field, anything unexpected becomes
a generic 500 carrying the request id that the log line carries too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from codeassist.model.errors import CodeassistError
from codeassist.remote.schema import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
          503: "server_unavailable", 504: "timeout_error"}


class APIError(CodeassistError):
    """Raised by routes; becomes an error response with this status, message and field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    detail = ErrorDetail(message=message, type=_TYPES.get(status, "server_error"), param=param, code=code)
    return ErrorResponse(error=detail).model_dump_json().encode()


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(status, message, param, code), status_code=status,
                    media_type="application/json", headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    # a union (str | list[str]) reports the member it tried: keep the field's own name
    return parts[0] if parts else None


def describe_validation(exc: RequestValidationError) -> tuple[int, str, str | None]:
    errors = exc.errors()
    if not errors:
        return 422, "the request is not valid", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return 400, "the body is not valid JSON", None
    name = _field_name(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "is not valid"))
    if first.get("type") == "missing":
        return 422, f"{name} is required", name
    if first.get("type") == "model_attributes_type" or name is None:
        return 400, "the body must be a JSON object", None
    return 422, f"{name}: {msg}", name


def install_handlers(app: FastAPI, on_reject: Callable[[str], None]) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        if exc.status in (400, 404, 422):
            on_reject("invalid" if exc.code != "context_length_exceeded" else "context")
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        status, message, param = describe_validation(exc)
        on_reject("invalid")
        return error_response(status, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 413:
            on_reject("body_too_large")
        return error_response(exc.status_code, message, headers=exc.headers)


def internal_error(request_id: str) -> JSONResponse:
    detail = ErrorDetail(message=f"internal error (request id {request_id})", type="server_error")
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=500)
