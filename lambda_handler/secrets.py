"""The Gemini API key, read from AWS Secrets Manager or SSM Parameter Store once per container.

Never from the zip or from a plain environment variable: both end up in places (build artefacts,
the console's configuration page, ``get-function-configuration``) readable by people who should not
hold the key. The environment only *names* where the key is. It is read on first use and kept for
the container's life, so a warm invocation costs no AWS call; ``forget`` drops it (after the model
rejects it, so a rotated key is picked up without a redeploy).

Error messages name the variable and the secret id, never a value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, Literal

SECRET_ID_ENV = "PROMPTGRADE_API_KEY_SECRET_ID"
PARAMETER_ENV = "PROMPTGRADE_API_KEY_PARAMETER"
_JSON_FIELDS = ("api_key", "GEMINI_API_KEY")

_lock = threading.Lock()
_cached: str | None = None


class SecretError(Exception):
    """The API key cannot be obtained: a deployment fault, answered as HTTP 500 ``missing_secret``."""

    status = 500
    code = "missing_secret"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def api_key() -> str:
    """The key, read from AWS on the first call of this container and from memory afterwards."""
    global _cached
    if _cached is None:
        with _lock:
            if _cached is None:
                _cached = _load()
    return _cached


def configured() -> bool:
    """Whether the function was given a key at all (a provider that needs none may run without)."""
    return bool(os.environ.get(SECRET_ID_ENV, "").strip() or os.environ.get(PARAMETER_ENV, "").strip())


def forget() -> None:
    """Drop the cached key so the next ``api_key()`` reads it again."""
    global _cached
    with _lock:
        _cached = None


def _load() -> str:
    secret_id = os.environ.get(SECRET_ID_ENV, "").strip()
    parameter = os.environ.get(PARAMETER_ENV, "").strip()
    if secret_id and parameter:
        raise SecretError(f"set only one of {SECRET_ID_ENV} and {PARAMETER_ENV}, not both")
    if secret_id:
        return _from_secrets_manager(secret_id)
    if parameter:
        return _from_parameter_store(parameter)
    raise SecretError(
        f"no API key configured: set {SECRET_ID_ENV} (a Secrets Manager secret) "
        f"or {PARAMETER_ENV} (an SSM SecureString parameter)"
    )


@contextlib.contextmanager
def _botocore_muted() -> Iterator[None]:
    """Silence botocore for one call: at DEBUG it logs whole response bodies — here, the key itself.

    A function run with ``AWS_LAMBDA_LOG_LEVEL=DEBUG`` would otherwise write the key to CloudWatch.
    """
    loggers = [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
        and (name == "botocore" or name.startswith(("botocore.", "urllib3")))
    ]
    previous = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, previous, strict=True):
            logger.disabled = disabled


def _client(service: Literal["secretsmanager", "ssm"]) -> Any:
    """boto3 is imported here, not at module import: a cold start that finds the key cached pays nothing."""
    import boto3

    return boto3.client(service)


def _from_secrets_manager(secret_id: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"Secrets Manager secret {secret_id!r} (from {SECRET_ID_ENV})"
    try:
        client = _client("secretsmanager")
        with _botocore_muted():
            response = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        raise SecretError(f"cannot read {where}: {_error_code(exc)}") from None
    except BotoCoreError as exc:
        raise SecretError(f"cannot read {where}: {type(exc).__name__}") from None
    value = response.get("SecretString")
    if value is None and response.get("SecretBinary") is not None:
        try:
            value = bytes(response["SecretBinary"]).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"{where} is binary, not text") from None
    return _key_from(value, where)


def _from_parameter_store(name: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"SSM parameter {name!r} (from {PARAMETER_ENV})"
    try:
        client = _client("ssm")
        with _botocore_muted():
            response = client.get_parameter(Name=name, WithDecryption=True)
    except ClientError as exc:
        raise SecretError(f"cannot read {where}: {_error_code(exc)}") from None
    except BotoCoreError as exc:
        raise SecretError(f"cannot read {where}: {type(exc).__name__}") from None
    return _key_from(response.get("Parameter", {}).get("Value"), where)


def _key_from(value: str | None, where: str) -> str:
    """The raw key, or the ``api_key`` / ``GEMINI_API_KEY`` field of a JSON secret."""
    text = (value or "").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise SecretError(f"{where} looks like JSON but is not valid JSON") from None
        found = next((data[f] for f in _JSON_FIELDS if isinstance(data.get(f), str)), None)
        if found is None:
            raise SecretError(f"{where} is JSON without a string field {' or '.join(_JSON_FIELDS)}")
        text = found.strip()
    if not text:
        raise SecretError(f"{where} is empty")
    return text


def _error_code(exc: Any) -> str:
    """Only the AWS error code: the message may quote more of the request than we want in a response."""
    return str(exc.response.get("Error", {}).get("Code") or "unknown error")
