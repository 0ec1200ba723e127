"""Put a built Lambda zip live: create or update the function, publish a version, move an alias.

Callers invoke the alias, never ``$LATEST``, so a deploy is atomic from their side and a rollback is
one ``update-alias``; a canary keeps the alias on the proven version and sends a share of traffic to
the new one. The Gemini API key never travels with the code: the function is told *where* the key is
(a Secrets Manager secret or an SSM SecureString) and deploy checks that it exists without reading
it. Everything checkable is checked before the first call that changes anything, so a mistake never
leaves a half-deployed function behind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from promptgrade.errors import PromptgradeError
from promptgrade.providers.records import DEFAULT_PROVIDER, Credential, RoleGrant, find
from promptgrade.shipping.package import (
    BUNDLE_IN_ZIP,
    DEFAULT_ARCHITECTURE,
    DEFAULT_RUNTIME,
    HANDLER,
    SUPPORTED_RUNTIMES,
    Architecture,
)
from promptgrade.shipping.queue import QueueMapping, QueueSettings, check_queue, connect_queue

# What the handler reads to find its key; the names are the contract with lambda_handler/app.py.
API_KEY_SECRET_ENV = "PROMPTGRADE_API_KEY_SECRET_ID"
API_KEY_PARAMETER_ENV = "PROMPTGRADE_API_KEY_PARAMETER"
DIRECT_UPLOAD_LIMIT_BYTES = 50_000_000  # Lambda's limit on a zip sent in the API call itself
_HANDLER_FILE = HANDLER.rsplit(".", 1)[0].replace(".", "/") + ".py"

# Names that hold a credential, unless they only say where one is kept (…_SECRET_ID, …_PARAMETER).
_KEY_NAME = re.compile(r"API_?KEY|PASSWORD|PASSWD|TOKEN|PRIVATE_?KEY|SECRET|CREDENTIAL", re.IGNORECASE)
_REFERENCE_NAME = re.compile(r"_(SECRET_ID|SECRET_ARN|SECRET_NAME|PARAMETER|PARAMETER_NAME)$", re.IGNORECASE)
_KEY_VALUES = (
    ("a Google API key", re.compile(r"AIza[0-9A-Za-z_-]{20,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)
_NATIVE = re.compile(r"\.cpython-(\d)(\d+)-(x86_64|aarch64)-linux-gnu\.so$")
_MACHINE = {"x86_64": "x86_64", "aarch64": "arm64"}


class DeployError(PromptgradeError):
    """The function cannot be deployed as asked (bad zip or settings, missing secret, AWS refused)."""


@dataclass(frozen=True)
class DeployReport:
    """Where the new code lives and who gets it: enough to verify, or to roll back by hand."""

    function_name: str
    function_arn: str
    created: bool
    version: str
    alias: str
    alias_version: str  # the version the alias points at (the old one during a canary)
    previous_version: str | None  # the alias's version before this deploy
    routing: dict[str, float] = field(default_factory=dict)  # canary: {new version: weight}
    code_sha256: str = ""  # as Lambda reports it: base64 of the zip's sha256
    code_source: str = "direct upload"
    description: str = ""
    queue: QueueMapping | None = None  # the SQS queue now feeding the alias, if one was given

    def summary(self) -> str:
        if self.routing:
            weights = ", ".join(f"{w:.0%} to v{v}" for v, w in self.routing.items())
            target = f"v{self.alias_version} with {weights}"
        else:
            target = f"v{self.version}"
        verb = "created" if self.created else "updated"
        fed = f"; {self.queue.summary()}" if self.queue else ""
        return f"{self.function_name} {verb}: published v{self.version}; alias {self.alias} -> {target}{fed}"


def deploy(
    zip_path: str | Path,
    *,
    function_name: str,
    role_arn: str,
    runtime: str = DEFAULT_RUNTIME,
    architecture: Architecture = DEFAULT_ARCHITECTURE,
    alias: str = "live",
    canary_weight: float | None = None,
    memory_mb: int = 512,
    timeout_s: int = 30,
    environment: dict[str, str] | None = None,
    api_key_secret_id: str | None = None,
    api_key_parameter: str | None = None,
    region: str,
    endpoint_url: str | None = None,
    s3_bucket: str | None = None,
    queue: QueueSettings | None = None,
    client: Any = None,
) -> DeployReport:
    """Deploy ``zip_path`` (built by ``build_package``) as ``function_name`` behind ``alias``.

    ``client`` is a boto3 Lambda client to use instead of a new one; the Secrets Manager, SSM and S3
    clients are made for ``region``/``endpoint_url``. With ``s3_bucket`` the zip is uploaded there
    and deployed from S3 (needed above 50 MB, and keeps every shipped artifact). With ``queue`` the
    alias is also fed by that existing SQS queue (``promptgrade.shipping.queue``).
    """
    zip_path = Path(zip_path)
    code = _read_zip(zip_path)
    description, provider, model = _check_zip(zip_path, code, runtime, architecture)
    variables = _environment(environment or {}, api_key_secret_id, api_key_parameter, provider)
    _check_settings(runtime, architecture, canary_weight, memory_mb, timeout_s, alias)
    _check_upload_size(zip_path, code, s3_bucket)

    def make(service: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=endpoint_url)

    lam = client if client is not None else make("lambda")
    _check_api_key_source(make, api_key_secret_id, api_key_parameter, region)
    check_queue(make, queue, timeout_s)
    record = find(provider)
    if record is not None and record.role_grant is not None:
        _grant(make, role_arn, record.role_grant, model, region)
    existing, current_alias = _current(lam, function_name, alias, canary_weight)
    code_arg, source = _upload(make, s3_bucket, function_name, code)
    settings: dict[str, Any] = {
        "Role": role_arn,
        "Handler": HANDLER,
        "Runtime": runtime,
        "MemorySize": memory_mb,
        "Timeout": timeout_s,
        "Environment": {"Variables": variables},
        "Description": description,
    }
    code_sha256 = base64.b64encode(hashlib.sha256(code).digest()).decode()
    with _aws(f"Lambda function {function_name!r}"):
        function_arn = _put_function(lam, function_name, existing, code_arg, settings, architecture)
        # CodeSha256 makes Lambda refuse to publish code other than ours (a concurrent deploy)
        version = lam.publish_version(
            FunctionName=function_name, CodeSha256=code_sha256, Description=description
        )["Version"]
        alias_version, routing = _point_alias(
            lam, function_name, alias, current_alias, version, canary_weight
        )
        fed = connect_queue(lam, make("iam"), role_arn, f"{function_arn}:{alias}", queue) if queue else None

    return DeployReport(
        function_name=function_name,
        function_arn=function_arn,
        created=existing is None,
        version=version,
        alias=alias,
        alias_version=alias_version,
        previous_version=current_alias["FunctionVersion"] if current_alias else None,
        routing=routing,
        code_sha256=code_sha256,
        code_source=source,
        description=description,
        queue=fed,
    )


# -- the steps that change AWS -----------------------------------------------------------------


def _current(
    lam: Any, function_name: str, alias: str, canary_weight: float | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The function and alias as they are now; a canary needs an alias on a published version."""
    existing = _get(lam, "get_function", FunctionName=function_name)
    current_alias = (
        _get(lam, "get_alias", FunctionName=function_name, Name=alias) if existing is not None else None
    )
    if canary_weight is not None:
        if current_alias is None:
            raise DeployError(
                f"a canary needs alias {alias!r} on a published version to keep serving: "
                "deploy once without a canary weight first"
            )
        if current_alias["FunctionVersion"] == "$LATEST":
            raise DeployError(f"alias {alias!r} points at $LATEST, which a canary cannot route from")
    return existing, current_alias


def _upload(make: Any, s3_bucket: str | None, function_name: str, code: bytes) -> tuple[dict[str, Any], str]:
    """The Code argument and where it came from: the zip itself, or its copy in S3 (named by sha256)."""
    if s3_bucket is None:
        return {"ZipFile": code}, "direct upload"
    key = f"promptgrade/{function_name}/{hashlib.sha256(code).hexdigest()}.zip"
    s3 = make("s3")
    with _aws(f"S3 bucket {s3_bucket!r}"):
        s3.head_bucket(Bucket=s3_bucket)
        s3.put_object(Bucket=s3_bucket, Key=key, Body=code)
    return {"S3Bucket": s3_bucket, "S3Key": key}, f"s3://{s3_bucket}/{key}"


def _put_function(
    lam: Any,
    function_name: str,
    existing: dict[str, Any] | None,
    code_arg: dict[str, Any],
    settings: dict[str, Any],
    architecture: str,
) -> str:
    """Create the function, or update its code then its configuration (each after the last settles)."""
    if existing is None:
        created = lam.create_function(
            FunctionName=function_name,
            Code=code_arg,
            PackageType="Zip",
            Architectures=[architecture],
            Publish=False,
            **settings,
        )
        _wait(lam, function_name, "function_active_v2", "function_active")
        return str(created["FunctionArn"])
    _wait(lam, function_name, "function_updated_v2", "function_updated")  # a deploy in flight
    lam.update_function_code(FunctionName=function_name, Architectures=[architecture], **code_arg)
    _wait(lam, function_name, "function_updated_v2", "function_updated")
    lam.update_function_configuration(FunctionName=function_name, **settings)
    _wait(lam, function_name, "function_updated_v2", "function_updated")
    return str(existing["Configuration"]["FunctionArn"])


def _point_alias(
    lam: Any,
    function_name: str,
    alias: str,
    current_alias: dict[str, Any] | None,
    version: str,
    canary_weight: float | None,
) -> tuple[str, dict[str, float]]:
    """Move the alias to ``version`` (or, for a canary, keep it and route a share there); returns the
    version the alias points at and the routing."""
    if current_alias is None:
        lam.create_alias(FunctionName=function_name, Name=alias, FunctionVersion=version)
        return version, {}
    previous = current_alias["FunctionVersion"]
    revision = {"RevisionId": current_alias["RevisionId"]} if current_alias.get("RevisionId") else {}
    routing: dict[str, float] = {}
    if canary_weight is not None and previous != version:
        alias_version = previous or version
        routing = {version: canary_weight}
    else:
        # a plain deploy also ends any canary in progress: all traffic to the new version
        alias_version = version
    lam.update_alias(
        FunctionName=function_name,
        Name=alias,
        FunctionVersion=alias_version,
        RoutingConfig={"AdditionalVersionWeights": routing},
        **revision,
    )
    return alias_version, routing


# -- local checks ------------------------------------------------------------------------------


def _read_zip(zip_path: Path) -> bytes:
    code = zip_path.read_bytes() if zip_path.is_file() else None
    if code is None:
        raise DeployError("no such zip: build it first with build_package", path=zip_path)
    return code


def _check_upload_size(zip_path: Path, code: bytes, s3_bucket: str | None) -> None:
    if s3_bucket is None and len(code) > DIRECT_UPLOAD_LIMIT_BYTES:
        raise DeployError(
            f"the zip is {len(code) / 1_000_000:.0f} MB, over Lambda's 50 MB direct-upload limit: "
            "pass an S3 bucket (s3_bucket / --s3-bucket) to deploy it from there",
            path=zip_path,
        )


def _check_zip(zip_path: Path, code: bytes, runtime: str, architecture: str) -> tuple[str, str, str]:
    """Refuse a zip that would fail at cold start; return a description naming the shipped prompt,
    and the bundle's provider and model (which decide the key and the permissions it needs)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = set(archive.namelist())
            manifest_name = f"{BUNDLE_IN_ZIP}/manifest.json"
            if _HANDLER_FILE not in names:
                raise DeployError(f"not a promptgrade Lambda zip: {_HANDLER_FILE} is missing", path=zip_path)
            if manifest_name not in names:
                raise DeployError(f"the zip has no prompt bundle ({manifest_name})", path=zip_path)
            raw_manifest = archive.read(manifest_name)
    except zipfile.BadZipFile as exc:
        raise DeployError(f"not a readable zip: {exc}", path=zip_path) from None
    for name in sorted(names):
        match = _NATIVE.search(name)
        if match is None:
            continue
        built_for = f"python{match[1]}.{match[2]}"
        if built_for != runtime or _MACHINE[match[3]] != architecture:
            raise DeployError(
                f"the zip was built for {built_for}/{_MACHINE[match[3]]} but the function is "
                f"{runtime}/{architecture}: build it again for the target",
                path=zip_path,
            )
    try:
        manifest = json.loads(raw_manifest)
        prompt = manifest["prompt"]
        text = (
            f"promptgrade {prompt['name']}@v{prompt['version']} (sha256 {prompt['sha256'][:12]}) "
            f"on {manifest.get('model', '?')}; zip sha256 {hashlib.sha256(code).hexdigest()[:12]}"
        )
        provider, model = str(manifest.get("provider", DEFAULT_PROVIDER)), str(manifest.get("model", ""))
    except (ValueError, KeyError, TypeError):
        raise DeployError("the zip's bundle manifest is invalid: package it again", path=zip_path) from None
    return text[:256], provider, model


def _environment(
    environment: dict[str, str],
    secret_id: str | None,
    parameter: str | None,
    provider: str = DEFAULT_PROVIDER,
) -> dict[str, str]:
    """The function's variables, refusing anything that looks like a key: it would be readable by
    anyone with lambda:GetFunctionConfiguration, and stored in every published version forever.

    The provider's record says what its function authenticates with: Gemini needs an API key; Bedrock
    none (the function's role is its credential); an OpenAI-compatible server one unless it runs
    without auth."""
    if secret_id is not None and parameter is not None:
        raise DeployError("say where the API key is once: api_key_secret_id or api_key_parameter, not both")
    given = secret_id is not None or parameter is not None
    record = find(provider)
    credential = record.credential if record is not None else Credential.OPTIONAL_API_KEY
    if record is not None and credential is Credential.API_KEY and not given:
        raise DeployError(
            f"say where the {record.title} API key is: exactly one of api_key_secret_id (Secrets Manager) "
            "or api_key_parameter (SSM SecureString)"
        )
    if record is not None and credential is Credential.IAM_ROLE and given:
        raise DeployError(
            f"a {record.title} bundle needs no API key: the function's role calls {record.title} "
            "(drop --secret-id)"
        )
    for name, value in environment.items():
        if name.upper() in {API_KEY_SECRET_ENV, API_KEY_PARAMETER_ENV}:
            raise DeployError(f"{name} is set by deploy: pass api_key_secret_id/api_key_parameter instead")
        if _KEY_NAME.search(name) and not _REFERENCE_NAME.search(name):
            raise DeployError(
                f"environment variable {name} looks like a credential: keep the key in Secrets Manager "
                "or SSM and pass its id (api_key_secret_id / api_key_parameter)"
            )
        for what, pattern in _KEY_VALUES:
            if pattern.search(str(value)):
                raise DeployError(
                    f"environment variable {name} holds what looks like {what}: keep it in Secrets Manager "
                    "or SSM, never in the function's environment"
                )
    variables = {name: str(value) for name, value in environment.items()}
    if secret_id is not None:
        variables[API_KEY_SECRET_ENV] = secret_id
    elif parameter is not None:
        variables[API_KEY_PARAMETER_ENV] = parameter
    return variables


def role_policy(grant: RoleGrant, model: str, region: str, account: str) -> dict[str, Any]:
    """The grant's one action on the bundle's model and nothing else (its record names the ARNs)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": grant.sid,
                "Effect": "Allow",
                "Action": grant.action,
                "Resource": grant.resources(model, region, account),
            }
        ],
    }


def _grant(make: Any, role_arn: str, grant: RoleGrant, model: str, region: str) -> None:
    """Give the execution role the one permission an IAM-role provider's bundle needs (an inline
    policy, replaced on each deploy so it follows the promoted model)."""
    role_name = role_arn.rsplit("/", 1)[-1]
    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else "*"
    with _aws(f"the role {role_name!r}"):
        make("iam").put_role_policy(
            RoleName=role_name,
            PolicyName=grant.policy_name,
            PolicyDocument=json.dumps(role_policy(grant, model, region, account)),
        )


def _check_settings(
    runtime: str, architecture: str, canary_weight: float | None, memory_mb: int, timeout_s: int, alias: str
) -> None:
    if runtime not in SUPPORTED_RUNTIMES:
        raise DeployError(
            f"unsupported Lambda runtime {runtime!r} (supported: {', '.join(SUPPORTED_RUNTIMES)})"
        )
    if architecture not in _MACHINE.values():
        raise DeployError(f"unsupported architecture {architecture!r} (supported: x86_64, arm64)")
    if canary_weight is not None and not 0 < canary_weight < 1:
        raise DeployError(f"canary weight must be between 0 and 1 (exclusive), got {canary_weight}")
    if not 128 <= memory_mb <= 10_240:
        raise DeployError(f"memory must be 128–10240 MB, got {memory_mb}")
    if not 1 <= timeout_s <= 900:
        raise DeployError(f"timeout must be 1–900 s, got {timeout_s}")
    if not re.fullmatch(r"(?![0-9]+$)[A-Za-z0-9_-]{1,128}", alias):
        raise DeployError(f"invalid alias name {alias!r} (letters, digits, - and _; not all digits)")


# -- AWS ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _aws(what: str) -> Iterator[None]:
    """One line for any AWS refusal, naming what was being done and AWS's own reason."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(f"{what}: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
    except WaiterError as exc:
        reason = (exc.last_response or {}).get("Configuration", {}).get("LastUpdateStatusReason")
        raise DeployError(f"{what}: did not become ready: {reason or exc}") from None
    except BotoCoreError as exc:
        raise DeployError(f"{what}: {exc}") from None


def _get(lam: Any, operation: str, **params: Any) -> dict[str, Any] | None:
    """The resource, or None when Lambda says it does not exist."""
    with _aws(f"Lambda {operation} {params.get('FunctionName')}"):
        try:
            return getattr(lam, operation)(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise


def _wait(lam: Any, function_name: str, waiter: str, fallback: str) -> None:
    """Lambda refuses a second update while one is in progress; wait for LastUpdateStatus first."""
    try:
        ready = lam.get_waiter(waiter)
    except ValueError:  # an older botocore without the v2 waiters
        ready = lam.get_waiter(fallback)
    ready.wait(FunctionName=function_name)


def _check_api_key_source(make: Any, secret_id: str | None, parameter: str | None, region: str) -> None:
    """Check the key's home exists, without ever reading the key (no GetSecretValue, no decryption)."""
    if secret_id is not None:
        with _aws(f"Secrets Manager secret {secret_id!r}"):
            try:
                described = make("secretsmanager").describe_secret(SecretId=secret_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    raise DeployError(
                        f"the API key secret {secret_id!r} does not exist in Secrets Manager ({region}): "
                        f"create it first (aws secretsmanager create-secret --name {secret_id} ...)"
                    ) from None
                raise
        if described.get("DeletedDate"):
            raise DeployError(f"the API key secret {secret_id!r} is scheduled for deletion")
        return
    if parameter is None:
        return  # no key to check: a provider that needs none (Bedrock, a server without auth)
    with _aws(f"SSM parameter {parameter!r}"):
        found = (
            make("ssm")
            .describe_parameters(
                ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [parameter]}]
            )
            .get("Parameters", [])
        )
    if not found:
        raise DeployError(
            f"the API key parameter {parameter!r} does not exist in SSM ({region}): create it first "
            f"(aws ssm put-parameter --type SecureString --name {parameter} ...)"
        )
    if found[0].get("Type") != "SecureString":
        raise DeployError(
            f"the API key parameter {parameter!r} is a {found[0].get('Type')}, not a SecureString: "
            "store the key encrypted"
        )
