"""The model client the bundle names, built the way this function is configured.

The zip holds only the promoted provider's code and dependencies (``promptgrade package`` chooses them
from the bundle), so each provider is imported only here, and only when it is the bundle's: a Bedrock
zip never imports google-genai. A bundle whose provider is not in the zip is a configuration error,
reported at the first request rather than as an import failure at cold start.

What differs between providers is read from their records (``promptgrade.providers.records``): the
variables that override an endpoint, which of the measured settings production keeps, and the
credential — an API key from Secrets Manager or SSM (``lambda_handler.secrets``; required, or only if
one is configured), or nothing but the function's IAM role.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_handler import secrets
from lambda_handler.errors import HandlerError
from promptgrade.bundle import MANIFEST
from promptgrade.errors import PromptgradeError
from promptgrade.providers.base import Provider
from promptgrade.providers.records import DEFAULT_PROVIDER, Credential, ProviderRecord, find

if TYPE_CHECKING:
    from promptgrade.bundle import Manifest


def preload(bundle_dir: Path) -> None:
    """Import the bundle's provider (and its SDK) now, in the init phase, not on the first request.

    Only the manifest's ``provider`` is read; anything wrong with the bundle is reported, with its
    status code, when the first request builds the runtime.
    """
    try:
        provider = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8")).get(
            "provider", DEFAULT_PROVIDER
        )
        record = find(provider)
    except (OSError, ValueError, AttributeError, TypeError):
        return
    if record is None:
        return
    try:
        importlib.import_module(record.module)
    except ImportError:
        return  # the first request says which provider is missing from the zip


def build(manifest: Manifest, timeout_s: float) -> Provider:
    try:
        return _build(manifest, timeout_s)
    except secrets.SecretError:
        raise
    except PromptgradeError as exc:  # CredentialsError: a blank key, no region, no role credentials
        raise secrets.SecretError(
            f"the {manifest.provider} credentials cannot be used: {exc.message}"
        ) from None


def _build(manifest: Manifest, timeout_s: float) -> Provider:
    record = find(manifest.provider)
    if record is None:
        raise HandlerError(500, "config_error", f"the bundle's provider {manifest.provider!r} is unknown")
    # The import is guarded: the packager ships only the bundle's provider, and a guarded import is
    # one it does not require (a bundle and zip that disagree are reported here, as config_error).
    try:
        provider_class = record.provider_class()
    except ImportError as exc:
        raise _not_in_zip(manifest, exc) from None
    built: Provider = provider_class(manifest.model, timeout_s=timeout_s, **_settings(record, manifest))
    return built


def _settings(record: ProviderRecord, manifest: Manifest) -> dict[str, Any]:
    """The constructor's arguments: each endpoint setting from the function's variable, else (where the
    record says production keeps it) as measured; and the API key its credential kind asks for."""
    arguments: dict[str, Any] = {}
    for argument, variable in record.lambda_settings.items():
        measured = getattr(manifest, argument, None) if argument in record.measured_settings else None
        arguments[argument] = os.environ.get(variable) or measured or None
    if record.credential is Credential.API_KEY:
        arguments["api_key"] = secrets.api_key()
    elif record.credential is Credential.OPTIONAL_API_KEY:
        arguments["api_key"] = secrets.api_key() if secrets.configured() else None
    return arguments


def _not_in_zip(manifest: Manifest, exc: ImportError) -> HandlerError:
    return HandlerError(
        500,
        "config_error",
        f"the bundle's provider {manifest.provider!r} is not in this zip ({exc.name} is missing): "
        "run `promptgrade package` for this bundle",
    )
