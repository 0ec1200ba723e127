"""Every environment variable the lab reads, in one typed object, and the only module that touches
``os.environ``.

Why one object: variables read where they were used (a dozen modules) could not be listed, and a
malformed value either surfaced as a traceback in the middle of a sweep or was silently misread.
Here each variable has a type, a default and a meaning; a bad value is one line naming it
(``SettingsError``, which the CLI prints like any user mistake); and the docs' table of variables (docs/reference/settings.md)
is generated from this class (``python -m promptgrade.settings --markdown``), so it cannot go stale.

Who reads it: the lab's entry points (``Sweep``, ``Tracker``, ``AnswerCache``, the dataset loaders)
call ``load_settings()`` and pass plain values down. The grading path and the providers never import
this module: they ship in the Lambda zip, whose variables are its own (``lambda_handler/README.md``),
so they take constructor parameters instead (``GeminiProvider(convert_per_call=...)``,
``OpenAIProvider(api_key=...)``).

Variables that an SDK reads by itself (``GEMINI_API_KEY``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``…) are not settings: promptgrade makes no decision about them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from promptgrade.errors import SettingsError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(value: object) -> object:
    """The spellings the lab has always accepted; anything else is a mistake, not a silent "off"."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise PydanticCustomError("flag", "expected 1/true/yes/on or 0/false/no/off")
    return value


def _byte_count(value: object) -> object:
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise PydanticCustomError("byte_count", "expected a number of bytes")
        return int(value)
    return value


def _count(value: object) -> object:
    if isinstance(value, str):
        if not value.strip().isdigit() or int(value) < 1:
            raise PydanticCustomError("count", "expected a whole number above 0")
        return int(value)
    return value


def _seconds(value: object) -> object:
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            raise PydanticCustomError("seconds", "expected a number of seconds above 0") from None
        if not seconds > 0:  # also NaN: a zero interval would poll the API in a busy loop
            raise PydanticCustomError("seconds", "expected a number of seconds above 0")
        return seconds
    return value


def _secret(value: object) -> object:
    """A key with only blanks is no key: say "not set" rather than send an empty bearer token."""
    if isinstance(value, str):
        return value.strip() or None
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
ByteCount = Annotated[int, BeforeValidator(_byte_count)]
Count = Annotated[int, BeforeValidator(_count), Field(ge=1)]
Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
Secret = Annotated[SecretStr | None, BeforeValidator(_secret)]
# ``~`` expanded in the default and in a user's value alike (a shell does not expand it inside quotes)
HomePath = Annotated[Path, AfterValidator(Path.expanduser), Field(validate_default=True)]


class Settings(BaseSettings):
    """The lab's environment. Field names are what code uses; each alias is the variable's name.

    Unset or empty variables take the default, as ``os.environ.get(...) or default`` did before.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,  # PROMPTGRADE_CACHE, not promptgrade_cache: the names the docs give
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,  # Settings(cache=...) in tests and library callers
        frozen=True,
    )

    cache: Path = Field(
        Path(".promptgrade") / "cache.sqlite",
        validation_alias="PROMPTGRADE_CACHE",
        description="The answer cache (SQLite; the batch journal sits beside it), relative to the working "
        "directory unless absolute; `--cache` wins.",
    )
    cache_dir: HomePath = Field(
        Path("~/.cache/promptgrade"),
        validation_alias="PROMPTGRADE_CACHE_DIR",
        description="Where downloaded datasets (S3) are kept between sweeps.",
    )
    trace_examples: Flag = Field(
        True,
        validation_alias="PROMPTGRADE_TRACE_EXAMPLES",
        description="Default of `trace_examples` for experiments that do not set it (one MLflow trace "
        "per example); `0` turns it off for a whole CI.",
    )
    plots: Flag = Field(
        True,
        validation_alias="PROMPTGRADE_PLOTS",
        description="Draw and log each candidate's plots and the sweep's comparison (about 0.2 s of the "
        "writer's CPU per plot); `0` leaves them out, e.g. in a CI that never looks at them. The HTML "
        "report shows what was logged.",
    )
    trace_workers_after: Count = Field(
        512,
        validation_alias="PROMPTGRADE_TRACE_WORKERS_AFTER",
        description="Against a tracking server, on 2+ cores, a sweep's writer hands trace batches to two "
        "worker processes once it has written this many traces itself: a smaller sweep is done before "
        "the workers would have started (each imports MLflow, seconds of CPU).",
    )
    gemini_convert_per_call: Flag = Field(
        False,
        validation_alias="PROMPTGRADE_GEMINI_CONVERT_PER_CALL",
        description="`1`: Gemini requests go through the SDK's public converters on every call instead "
        "of per-candidate templates (slower; to measure or rule out the templates).",
    )
    batch_poll_s: Seconds = Field(
        10.0,
        validation_alias="PROMPTGRADE_BATCH_POLL_S",
        description="First interval between polls of batch jobs, in seconds; it backs off ×1.5 up to "
        "30 times this (at most 5 minutes).",
    )
    batch_inline_bytes: ByteCount = Field(
        20 * 1024 * 1024,
        validation_alias="PROMPTGRADE_BATCH_INLINE_BYTES",
        description="Largest batch job sent inline, in bytes (the Batch API's limit); a larger job is "
        "uploaded as a JSONL file.",
    )
    batch_max_requests: Count | None = Field(
        None,
        validation_alias="PROMPTGRADE_BATCH_MAX_REQUESTS",
        description="Most requests in one batch job, below the provider's own limit (OpenAI and Bedrock: "
        "50,000); a candidate with more is split into jobs of near-equal size. Unset: the provider's limit.",
    )
    bedrock_batch_min_records: Count = Field(
        100,
        validation_alias="PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS",
        description='Fewest records a Bedrock batch job may hold (the per-model quota "Minimum number of '
        "records per batch inference job\"; set your account's value): fewer requests are held back, not "
        "submitted.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="The MLflow store; `--tracking-uri` wins. Unset: `./mlflow.db` (SQLite) in the "
        "working directory.",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias="OPENAI_BASE_URL",
        description="Server of `provider: openai` models without a `base_url` of their own. Unset: OpenAI.",
    )
    openai_api_key: Secret = Field(
        None,
        validation_alias="OPENAI_API_KEY",
        description="Key of `provider: openai` models without an `api_key_env`; a server of your own "
        "(a `base_url`) may need none.",
    )

    def lab_endpoint(self, variable: str) -> str | None:
        """A provider's endpoint override as its record names it (``OPENAI_BASE_URL`` is a field of its
        own, documented above; the others are the SDKs' own variables, passed on explicitly so the
        endpoint a model is reached at is known, not guessed)."""
        if variable == "OPENAI_BASE_URL":
            return self.openai_base_url
        return read_secret(variable)

    def openai_key(self, api_key_env: str | None) -> str | None:
        """An OpenAI-compatible model's key: from the variable its ``api_key_env`` names, else
        ``OPENAI_API_KEY``; None when that variable is unset (the provider says whether that is fine)."""
        if api_key_env is not None:
            return read_secret(api_key_env)
        return self.openai_api_key.get_secret_value() if self.openai_api_key is not None else None


def load_settings() -> Settings:
    """The lab's settings from this process's environment, read now (tests change it between calls).

    Raises SettingsError: one line naming each malformed variable and its value.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    message = str(error["msg"])
    return f"{name}={error['input']!r}: {message[:1].lower()}{message[1:]}"


def read_secret(name: str) -> str | None:
    """The value of a variable whose name the *user* chose (a model's ``api_key_env``), or None.

    It cannot be a field: the name is known only from the experiment file. Blank counts as unset.
    """
    return os.environ.get(name, "").strip() or None


def set_library_default(name: str, value: str) -> None:
    """Give a third-party library's variable a value for this process unless the user set one."""
    os.environ.setdefault(name, value)


def child_environment(
    defaults: Mapping[str, str] | None = None, *, drop_prefix: str | None = None
) -> dict[str, str]:
    """This process's environment for a subprocess: the user's values win over ``defaults``, and
    variables starting with ``drop_prefix`` are left out (e.g. ``PYTHON``, so that another
    interpreter is not steered by ours)."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if drop_prefix is None or not name.startswith(drop_prefix)
    }
    return {**(defaults or {}), **inherited}


# -- the reference table ----------------------------------------------------------------------------
def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def reference_table() -> str:
    """The docs' table of variables (name, default, meaning), in field order."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for field in Settings.model_fields.values():
        rows.append(f"| `{field.validation_alias}` | {_shown(field.default)} | {field.description} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m promptgrade.settings --markdown``: print the table (docs/reference/settings.md embeds it)."""
    parser = argparse.ArgumentParser(prog="python -m promptgrade.settings", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the table of variables")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.print_help()
        return 2
    sys.stdout.write(reference_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
