"""The one error shape every endpoint answers with (from the seed "College Accounts"):
``{"error": {"code", "message", "details", "timestamp", "request_id"}}``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine import application as svc
from engine.db import DatabaseUnavailable
from engine.errors import Conflict, InvalidInput, LedgerflowError, NotFound, RequestRefused
from engine.fields import field_errors
from engine.integrations import IntegrationError

log = logging.getLogger("ledgerflow.api")

# The status of a service error follows its family (engine/errors.py): a new error answers correctly
# as soon as it picks its family. The first family in the error's MRO found here wins.
STATUS_OF: dict[type[LedgerflowError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
}


def status_of(exc: LedgerflowError, default: int = 400) -> int:
    """The HTTP status for ``exc``: that of the nearest family in ``STATUS_OF``, else ``default``."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return default


RETRY_AFTER_SECONDS = 5


class ApiError(RequestRefused):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def error_body(
    code: str, message: str, details: dict[str, Any] | None, request_id: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "request_id": request_id,
        }
    }


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, details, getattr(request.state, "request_id", None))
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(svc.ServiceError)
    async def service_error(request: Request, exc: svc.ServiceError) -> JSONResponse:
        return error_response(request, status_of(exc), exc.code, exc.message, exc.details)

    @app.exception_handler(IntegrationError)
    async def integration_error(request: Request, exc: IntegrationError) -> JSONResponse:
        fields = [{"path": v.path, "code": v.code, "message": v.message, **v.details} for v in exc.violations]
        return error_response(request, 422, exc.code, exc.message, {"fields": fields})

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("PostgreSQL unavailable: %s", exc)
        return error_response(
            request,
            503,
            "database_unavailable",
            "the event store is temporarily unreachable; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = field_errors(exc.errors())
        summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields[:5])
        return error_response(request, 422, "validation_failed", summary, {"fields": fields})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body that is not UTF-8 (RFC 8259 requires it) with a bare 400; it
            # is invalid JSON like any other, and answered as such (found by test_api_fuzz).
            field = {"path": "body", "code": "json_invalid", "message": "body is not valid JSON: not UTF-8"}
            return error_response(request, 422, "validation_failed", field["message"], {"fields": [field]})
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        return error_response(
            request, exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "internal_error", "an unexpected error occurred; it has been logged"
        )
