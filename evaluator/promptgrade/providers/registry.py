"""The provider class a model spec names, built from its record (``records``), never from a name chain.

Each SDK is imported only when its provider is used, so a Lambda zip holding one provider's
dependencies never imports another's (and a missing SDK is one line naming what to install).
"""

from __future__ import annotations

from typing import Any

from promptgrade.errors import ProviderError
from promptgrade.providers.base import Provider
from promptgrade.providers.records import NAMES, find

PROVIDERS = NAMES


def make_provider(
    provider: str,
    model: str,
    *,
    base_url: str | None = None,
    timeout_s: float = 60.0,
    **fields: Any,
) -> Provider:
    """Build a provider; raises CredentialsError (one clear line) when it cannot authenticate.

    ``fields`` are the experiment model's provider-specific fields (``region``, ``api_key_env``) and
    the values the lab resolves from its settings (``convert_per_call``, ``api_key``): each goes to the
    providers whose record takes it, so callers can pass them blindly.
    """
    record = find(provider)
    if record is None:
        raise ProviderError(f"unknown provider {provider!r} (available: {', '.join(PROVIDERS)})")
    arguments = {name: value for name, value in fields.items() if name in record.fields | record.lab_options}
    try:
        built: Provider = record.provider_class()(model, base_url=base_url, timeout_s=timeout_s, **arguments)
    except ModuleNotFoundError as exc:
        raise ProviderError(
            f"provider {provider} needs the {record.package} package ({exc.name} is missing): "
            f"pip install {record.package}"
        ) from None
    return built
