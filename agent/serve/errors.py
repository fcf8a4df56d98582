"""Errors in each API's own shape: OpenAI `{"error": {message, type, param, code}}`, Anthropic
`{"type": "error", "error": {type, message}}`."""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

# Anthropic's error type for each status (docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"}
_OPENAI_TYPES = {401: "authentication_error", 404: "invalid_request_error", 500: "server_error",
                 503: "server_error"}


class ApiError(Exception):
    """A request that cannot be served: status, message, and for OpenAI the offending parameter and a code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def openai_body(error: ApiError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": _OPENAI_TYPES.get(error.status, "invalid_request_error"),
                      "param": error.param, "code": error.code}}


def anthropic_body(error: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(error.status, "invalid_request_error"),
                                       "message": error.message}}


def error_response(error: ApiError, anthropic: bool) -> JSONResponse:
    body = anthropic_body(error) if anthropic else openai_body(error)
    return JSONResponse(body, status_code=error.status)


def require(condition: bool, message: str, param: str | None = None) -> None:
    """Raise a 400 ApiError naming `param` unless `condition` holds."""
    if not condition:
        raise ApiError(400, message, param=param, code="invalid_value" if param else None)
