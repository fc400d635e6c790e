"""The server's one error type: answered as Databricks does, HTTP status + {"error_code", "message"}."""
from __future__ import annotations

__all__ = ["ApiError", "bad_parameter"]


class ApiError(Exception):
    """An error the endpoint server answers with ``status`` and a Databricks error code."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


def bad_parameter(message: str) -> ApiError:
    """400 INVALID_PARAMETER_VALUE: a management request (endpoint config) that cannot be applied."""
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)
