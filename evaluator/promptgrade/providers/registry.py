"""Which provider class answers for a model spec. New providers register here, nowhere else.

Each SDK is imported only when its provider is used, so a Lambda zip holding one provider's
dependencies never imports another's (and a missing SDK is one line naming what to install).
"""

from __future__ import annotations

from promptgrade.errors import ProviderError
from promptgrade.providers.base import Provider

PROVIDERS = ("gemini", "bedrock", "openai")
_PACKAGES = {"gemini": "google-genai", "bedrock": "boto3", "openai": "openai"}


def make_provider(
    provider: str,
    model: str,
    *,
    base_url: str | None = None,
    timeout_s: float = 60.0,
    api_key_env: str | None = None,
    api_key: str | None = None,
    region: str | None = None,
    convert_per_call: bool = False,
) -> Provider:
    """Build a provider; raises CredentialsError (one clear line) when it cannot authenticate.

    What promptgrade decides (a key from the variable ``api_key_env`` names, a fallback endpoint, the
    request-building switch) comes resolved from the caller's settings: these modules ship in the Lambda.
    """
    try:
        if provider == "gemini":
            from promptgrade.providers.gemini import GeminiProvider

            return GeminiProvider(
                model, base_url=base_url, timeout_s=timeout_s, convert_per_call=convert_per_call
            )
        if provider == "bedrock":
            from promptgrade.providers.bedrock import BedrockProvider

            return BedrockProvider(model, region=region, base_url=base_url, timeout_s=timeout_s)
        if provider == "openai":
            from promptgrade.providers.openai import OpenAIProvider

            return OpenAIProvider(
                model, base_url=base_url, timeout_s=timeout_s, api_key_env=api_key_env, api_key=api_key
            )
    except ModuleNotFoundError as exc:
        package = _PACKAGES[provider]
        raise ProviderError(
            f"provider {provider} needs the {package} package ({exc.name} is missing): pip install {package}"
        ) from None
    raise ProviderError(f"unknown provider {provider!r} (available: {', '.join(PROVIDERS)})")
