"""Every provider, declared once: what the lab, the packager, ``deploy`` and the Lambda need to know.

A provider used to be spelled in a dozen places (the registry, config validation, the sweep, the
packager, deploy, the Lambda's factory, the SAM template, tests); each now reads its record here, so a
new provider is its module, its record, its test server, its price rows and its Lambda lock file. As
in inspect_ai's ``@modelapi`` table and llm's ``register_models``, a record names the class to import
instead of importing it: the SDK is loaded only when that provider is used.

Standard library only: the Lambda zip ships this module with every provider's zip, and it must not
pull in pydantic-settings, another provider's SDK or anything of the lab.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Credential(StrEnum):
    """How the deployed function authenticates to the model: what ``deploy`` and the template ask for."""

    API_KEY = "api_key"  # a key is required; the function reads it from Secrets Manager or SSM
    OPTIONAL_API_KEY = "optional_api_key"  # a key if the server wants one (a local server runs without)
    IAM_ROLE = "iam_role"  # the function's execution role is the credential: never a secret

    @property
    def uses_key(self) -> bool:
        return self is not Credential.IAM_ROLE


@dataclass(frozen=True)
class RoleGrant:
    """The one permission the execution role needs for an IAM-role provider, on the promoted model only."""

    policy_name: str  # the inline policy deploy puts on the role (replaced on each deploy)
    sid: str
    action: str
    resources: Callable[[str, str, str], list[str]]  # (model, region, account) -> the ARNs to allow


@dataclass(frozen=True)
class ProviderRecord:
    """One provider. ``factory`` and ``batch`` are ``module:Class`` references, imported on use."""

    name: str  # what an experiment's ``provider:`` and a bundle's manifest say
    title: str  # how a message names it
    factory: str  # the Provider class
    package: str  # the pip package to install when its SDK is missing
    sdk: str  # the SDK's top-level import name: no other provider's zip or Lambda may import it
    lambda_modules: tuple[str, ...]  # its modules in the zip (paths under promptgrade/)
    lambda_requirements: str  # its zip's lock file, relative to the project root
    credential: Credential
    # constructor argument -> the deployed function's variable that sets it (an endpoint override)
    lambda_settings: Mapping[str, str]
    lab_endpoint_env: str  # the lab's endpoint override, read by the SDK (or the provider) itself
    # constructor arguments the Lambda takes from the bundle's manifest when its variable is unset
    # (where the model was measured is where production calls it: a Bedrock region, an OpenAI server)
    measured_settings: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()  # experiment model fields only this provider takes, as arguments
    # constructor arguments the lab resolves from its settings (the provider reads no settings itself:
    # it ships in the Lambda, which passes its own)
    lab_options: frozenset[str] = frozenset()
    experiment_base_url: bool = False  # whether the experiment-level ``base_url`` is this provider's too
    role_grant: RoleGrant | None = None  # with Credential.IAM_ROLE
    batch: str | None = (
        None  # the batch back-end (a ``providers.batch_base.BatchBackend``), for ``batch: true``
    )
    # experiment model fields only its batch jobs use (a Bedrock job's S3 prefix and service role): the
    # back-end's arguments, never the online provider's
    batch_fields: frozenset[str] = frozenset()
    # the batch back-end's arguments beyond (model, base_url, timeout_s): which of the model's fields and
    # the lab's resolved options it takes
    batch_options: frozenset[str] = frozenset()
    # images one request may carry (the tray and a prompt's reference images); None: no fixed limit
    # known (an OpenAI-compatible server decides: vLLM's --limit-mm-per-prompt, for one)
    max_images: int | None = None

    @property
    def module(self) -> str:
        return self.factory.partition(":")[0]

    def provider_class(self) -> type:
        """The provider class, importing its module (and SDK) now; ImportError if it is not installed."""
        return load(self.factory)

    def batch_class(self) -> type:
        if self.batch is None:
            raise LookupError(f"{self.name} has no batch back-end")
        return load(self.batch)


def load(reference: str) -> type:
    module, _, attribute = reference.partition(":")
    found: type = getattr(importlib.import_module(module), attribute)
    return found


_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|us-gov|global)\.")


def bedrock_model_arns(model: str, region: str, account: str) -> list[str]:
    """The model and nothing else. A cross-region inference profile (``us.anthropic…``) routes to its
    base model in several regions, so both the profile and the base model (in any region) are named."""
    base = _PROFILE_PREFIX.sub("", model)
    resources = [f"arn:aws:bedrock:*::foundation-model/{base}"]
    if base != model:
        resources.append(f"arn:aws:bedrock:{region}:{account}:inference-profile/{model}")
    return resources


RECORDS: tuple[ProviderRecord, ...] = (
    ProviderRecord(
        name="gemini",
        title="Gemini",
        factory="promptgrade.providers.gemini:GeminiProvider",
        package="google-genai",
        sdk="google",
        lambda_modules=("providers/gemini.py", "providers/gemini_wire.py"),
        lambda_requirements="lambda_handler/requirements.txt",
        credential=Credential.API_KEY,
        lambda_settings=MappingProxyType({"base_url": "PROMPTGRADE_GEMINI_BASE_URL"}),
        lab_endpoint_env="GOOGLE_GEMINI_BASE_URL",
        lab_options=frozenset({"convert_per_call"}),
        experiment_base_url=True,
        batch="promptgrade.providers.gemini_batch:GeminiBatches",
        batch_options=frozenset({"inline_limit_bytes"}),
        max_images=3000,  # the Gemini API's documented limit is 3,600 image files per request
    ),
    ProviderRecord(
        name="bedrock",
        title="Bedrock",
        factory="promptgrade.providers.bedrock:BedrockProvider",
        package="boto3",
        sdk="boto3",
        lambda_modules=("providers/bedrock.py",),
        lambda_requirements="lambda_handler/requirements-bedrock.txt",
        credential=Credential.IAM_ROLE,
        lambda_settings=MappingProxyType(
            {"base_url": "PROMPTGRADE_BEDROCK_ENDPOINT_URL", "region": "PROMPTGRADE_BEDROCK_REGION"}
        ),
        lab_endpoint_env="AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        measured_settings=frozenset({"region"}),  # else the function's own AWS_REGION
        fields=frozenset({"region"}),
        role_grant=RoleGrant(
            policy_name="promptgrade-bedrock-invoke",
            sid="InvokePromotedModel",
            action="bedrock:InvokeModel",
            resources=bedrock_model_arns,
        ),
        batch="promptgrade.providers.bedrock_batch:BedrockBatches",
        batch_fields=frozenset({"batch_s3_uri", "batch_role_arn"}),
        batch_options=frozenset({"region", "batch_s3_uri", "batch_role_arn", "min_records"}),
        max_images=20,  # Converse: at most 20 images per request
    ),
    ProviderRecord(
        name="openai",
        title="OpenAI-compatible",
        factory="promptgrade.providers.openai:OpenAIProvider",
        package="openai",
        sdk="openai",
        lambda_modules=("providers/openai.py",),
        lambda_requirements="lambda_handler/requirements-openai.txt",
        credential=Credential.OPTIONAL_API_KEY,
        lambda_settings=MappingProxyType({"base_url": "PROMPTGRADE_OPENAI_BASE_URL"}),
        lab_endpoint_env="OPENAI_BASE_URL",
        measured_settings=frozenset({"base_url"}),
        fields=frozenset({"api_key_env"}),
        lab_options=frozenset({"api_key"}),
        batch="promptgrade.providers.openai_batch:OpenAIBatches",
        batch_options=frozenset({"api_key", "api_key_env"}),
    ),
)

NAMES: tuple[str, ...] = tuple(record.name for record in RECORDS)
DEFAULT_PROVIDER = "gemini"  # what a model, a bundle or a zip without ``provider`` means (the first wave's)
_BY_NAME: Mapping[str, ProviderRecord] = MappingProxyType({record.name: record for record in RECORDS})


def find(name: str) -> ProviderRecord | None:
    """The record of ``name``, or None: each caller words "unknown provider" its own way."""
    return _BY_NAME.get(name)


def accepting(field_name: str) -> list[ProviderRecord]:
    """The providers whose models may set ``field_name`` (``region``, ``api_key_env``, ``batch``,
    ``batch_s3_uri``…)."""
    if field_name == "batch":
        return [record for record in RECORDS if record.batch is not None]
    return [record for record in RECORDS if field_name in record.fields | record.batch_fields]
