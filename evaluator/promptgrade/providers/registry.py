"""Which provider class answers for a model spec. New providers register here, nowhere else."""

from __future__ import annotations

from promptgrade.errors import ProviderError
from promptgrade.providers.base import Provider


def make_provider(
    provider: str, model: str, *, base_url: str | None = None, timeout_s: float = 60.0
) -> Provider:
    """Build a provider; raises CredentialsError (one clear line) when it cannot authenticate."""
    if provider == "gemini":
        from promptgrade.providers.gemini import GeminiProvider

        return GeminiProvider(model, base_url=base_url, timeout_s=timeout_s)
    raise ProviderError(f"unknown provider {provider!r} (available: gemini)")
