"""The model client the bundle names, built the way this function is configured.

The zip holds only the promoted provider's code and dependencies (``promptgrade package`` chooses them
from the bundle), so each provider is imported only here, and only when it is the bundle's: a Bedrock
zip never imports google-genai. A bundle whose provider is not in the zip is a configuration error,
reported at the first request rather than as an import failure at cold start.

Credentials: Gemini and OpenAI-compatible servers take the API key from Secrets Manager or SSM
(``lambda_handler.secrets``); Bedrock takes nothing but the function's IAM role.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from lambda_handler import secrets
from lambda_handler.errors import HandlerError
from promptgrade.bundle import MANIFEST
from promptgrade.errors import PromptgradeError
from promptgrade.providers.base import Provider

if TYPE_CHECKING:
    from promptgrade.bundle import Manifest

# Endpoint overrides for the deployed function (an API gateway, a VPC endpoint, a test server).
GEMINI_BASE_URL_ENV = "PROMPTGRADE_GEMINI_BASE_URL"
BEDROCK_ENDPOINT_ENV = "PROMPTGRADE_BEDROCK_ENDPOINT_URL"
BEDROCK_REGION_ENV = "PROMPTGRADE_BEDROCK_REGION"
OPENAI_BASE_URL_ENV = "PROMPTGRADE_OPENAI_BASE_URL"


MODULES = {
    "gemini": "promptgrade.providers.gemini",
    "bedrock": "promptgrade.providers.bedrock",
    "openai": "promptgrade.providers.openai",
}


def preload(bundle_dir: Path) -> None:
    """Import the bundle's provider (and its SDK) now, in the init phase, not on the first request.

    Only the manifest's ``provider`` is read; anything wrong with the bundle is reported, with its
    status code, when the first request builds the runtime.
    """
    try:
        provider = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8")).get("provider", "gemini")
        module = MODULES[provider]
    except (OSError, ValueError, KeyError, AttributeError):
        return
    try:
        importlib.import_module(module)
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
    env = os.environ
    # Each import is guarded: the packager ships only the bundle's provider, and a guarded import is
    # one it does not require (a bundle and zip that disagree are reported here, as config_error).
    if manifest.provider == "gemini":
        try:
            from promptgrade.providers.gemini import GeminiCredentials, GeminiProvider
        except ImportError as exc:
            raise _not_in_zip(manifest, exc) from None

        credentials = GeminiCredentials(api_key=SecretStr(secrets.api_key()), use_vertexai=False)
        base_url = env.get(GEMINI_BASE_URL_ENV) or None
        return GeminiProvider(manifest.model, base_url=base_url, timeout_s=timeout_s, credentials=credentials)
    if manifest.provider == "bedrock":
        try:
            from promptgrade.providers.bedrock import BedrockProvider
        except ImportError as exc:
            raise _not_in_zip(manifest, exc) from None

        region = env.get(BEDROCK_REGION_ENV) or manifest.region or None  # else the function's AWS_REGION
        endpoint = env.get(BEDROCK_ENDPOINT_ENV) or None
        return BedrockProvider(manifest.model, region=region, base_url=endpoint, timeout_s=timeout_s)
    if manifest.provider == "openai":
        try:
            from promptgrade.providers.openai import OpenAIProvider
        except ImportError as exc:
            raise _not_in_zip(manifest, exc) from None

        base_url = env.get(OPENAI_BASE_URL_ENV) or manifest.base_url
        key = secrets.api_key() if secrets.configured() else None
        return OpenAIProvider(manifest.model, base_url=base_url, timeout_s=timeout_s, api_key=key)
    raise HandlerError(500, "config_error", f"the bundle's provider {manifest.provider!r} is unknown")


def _not_in_zip(manifest: Manifest, exc: ImportError) -> HandlerError:
    return HandlerError(
        500,
        "config_error",
        f"the bundle's provider {manifest.provider!r} is not in this zip ({exc.name} is missing): "
        "run `promptgrade package` for this bundle",
    )
