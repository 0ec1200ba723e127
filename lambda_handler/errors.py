"""Why a request got no grade: the handler's typed errors and the status and code of each model failure."""

from __future__ import annotations

from lambda_handler import fetch, secrets
from promptgrade.providers.base import ErrorKind

MODEL_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.RATE_LIMITED: (503, "model_rate_limited"),
    ErrorKind.QUOTA_EXHAUSTED: (503, "model_quota_exhausted"),
    ErrorKind.TIMEOUT: (504, "model_timeout"),
    ErrorKind.BLOCKED: (502, "model_blocked"),
    ErrorKind.MALFORMED: (502, "model_malformed_response"),
    ErrorKind.TRUNCATED: (502, "model_truncated"),
    ErrorKind.EMPTY: (502, "model_empty_answer"),
    ErrorKind.AUTH: (502, "model_auth_failed"),
    # SERVER_ERROR, CONNECTION and BAD_REQUEST: "model_error"
}


class HandlerError(Exception):
    """Why a request got no grade, as the HTTP status and error code a client can act on."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.retryable = retryable


class InvocationError(Exception):
    """Fails an S3-triggered invocation on purpose, so Lambda retries it and then sends it on-failure."""


# The three typed errors a request can end in; each carries ``status``, ``code`` and ``message``.
REQUEST_ERRORS = (HandlerError, fetch.FetchError, secrets.SecretError)
RequestError = HandlerError | fetch.FetchError | secrets.SecretError


def model_error(kind: ErrorKind) -> tuple[int, str]:
    """The HTTP status and error code a failed model call of this kind is answered with."""
    return MODEL_ERRORS.get(kind, (502, "model_error"))
