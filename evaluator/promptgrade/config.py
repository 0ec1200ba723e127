"""The experiment file: prompts × models × settings over one labelled dataset split.

Everything is validated when the file is loaded — unknown fields, missing prompts, template errors,
unknown price entries — so a mistake costs nothing: no paid call is made before the whole sweep is
known to be well-formed. Relative paths are resolved here, once, against the experiment file's folder.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promptgrade.data.config import DatasetConfig
from promptgrade.errors import ConfigError, PromptError
from promptgrade.grading import MAX_SAMPLES
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.providers.base import GenerationSettings
from promptgrade.providers.records import DEFAULT_PROVIDER, NAMES, RECORDS, accepting, find
from promptgrade.scoring import Price
from promptgrade.task import Task, load_task
from promptgrade.tokens import ImageTokenRule, longest_prefix
from promptgrade.yamlfile import line_of, load_model, read_yaml

PRIMARY_METRICS = ("category_accuracy", "category_top1_accuracy", "grade_accuracy", "grade_mae")
ProviderName = Literal[NAMES]  # type: ignore[valid-type]
# model fields that only some providers take (their records say which): checked against the provider
PROVIDER_FIELDS = tuple(sorted(set().union(*(record.fields | record.batch_fields for record in RECORDS))))


class PromptRef(BaseModel):
    """``name`` with ``versions``: a list, ``all`` (every version on disk) or ``latest``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    versions: list[Annotated[int, Field(ge=1)]] | Literal["all", "latest"] = "all"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        """Accept the short form ``meal_tray_json@2`` (or ``@v2``, ``@latest``, bare name = all)."""
        if not isinstance(value, str):
            return value
        name, _, version = value.partition("@")
        version = version.removeprefix("v")
        if not version:
            return {"name": name}
        if version in ("all", "latest"):
            return {"name": name, "versions": version}
        if not version.isdigit():
            raise ValueError(f"{value!r}: expected name@<version number>, name@latest or a bare name")
        return {"name": name, "versions": [int(version)]}


class Limits(BaseModel):
    """A model's rate limits: the runner stays under them instead of discovering them through 429s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(None, ge=1, description="Requests in flight at once.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Input tokens per minute (estimated before each call).")


class ModelSpec(BaseModel):
    """A model and its settings; ``grid`` lists values to sweep (every combination is a candidate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: ProviderName = DEFAULT_PROVIDER
    model: str = Field(min_length=1)
    base_url: str | None = Field(
        None,
        description="This model's endpoint (gemini: else the experiment's base_url; openai: else "
        "$OPENAI_BASE_URL, else OpenAI).",
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="openai: the NAME of the variable holding the key (default OPENAI_API_KEY); never the key.",
    )
    region: str | None = Field(None, description="bedrock: the AWS region (else the AWS chain's).")
    batch_s3_uri: str | None = Field(
        None,
        description="bedrock, with `batch`: the S3 prefix (s3://bucket/prefix) its batch jobs' input and "
        "output files go under.",
    )
    batch_role_arn: str | None = Field(
        None,
        description="bedrock, with `batch`: the service role Bedrock's batch jobs run as (reads and writes "
        "batch_s3_uri).",
    )
    settings: GenerationSettings = GenerationSettings()
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    timeout_s: float = Field(60.0, gt=0)
    limits: Limits = Limits()
    batch: bool = Field(
        False,
        description="send this model's uncached requests as batch jobs (Gemini, Bedrock, OpenAI: half "
        "price, up to 24 h) instead of one call each; `sweep --batch` sets it for every model.",
    )
    samples: int = Field(
        1,
        ge=1,
        le=MAX_SAMPLES,
        description="Answers per example (k separate requests), reduced to one by a vote: see "
        "'Repeated samples and abstention' in docs/guides/metrics.md.",
    )
    abstain_below: float | None = Field(
        None,
        gt=0,
        le=1,
        description="An example whose samples agree less than this is abstained (sent to a person), "
        "not scored as an answer, in the selective metrics.",
    )

    @model_validator(mode="after")
    def _provider_fields(self) -> ModelSpec:
        record = find(self.provider)
        assert record is not None  # the Literal above admits only recorded providers
        if self.batch and record.batch is None:
            batched = " or ".join(r.title for r in accepting("batch"))
            raise ValueError(
                f"batch: only {batched} models run as batch jobs; {self.provider} models are swept online"
            )
        for name in PROVIDER_FIELDS:
            if getattr(self, name) is not None and name not in record.fields | record.batch_fields:
                owners = " or ".join(r.name for r in accepting(name))
                raise ValueError(f"{name} is for provider: {owners}, not {self.provider}")
        return self

    def provider_fields(self) -> dict[str, Any]:
        """The fields only this model's provider takes (``region``, ``api_key_env``), as its arguments."""
        record = find(self.provider)
        return {name: getattr(self, name) for name in sorted(record.fields)} if record else {}

    def batch_fields(self) -> dict[str, str]:
        """The fields set on this model that its batch jobs need (``region``, ``batch_s3_uri``,
        ``api_key_env``…): what the journal keeps so that ``batches cancel`` reaches a job again."""
        record = find(self.provider)
        names = record.fields | record.batch_fields if record else frozenset()
        return {name: str(getattr(self, name)) for name in sorted(names) if getattr(self, name) is not None}

    @field_validator("grid")
    @classmethod
    def _grid_fields(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        known = set(GenerationSettings.model_fields) | {"samples"}
        for key, values in grid.items():
            if key not in known:
                raise ValueError(
                    f"grid key {key!r} is not a generation setting or samples ({', '.join(sorted(known))})"
                )
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
            if key == "samples" and not all(isinstance(v, int) and 1 <= v <= MAX_SAMPLES for v in values):
                raise ValueError(
                    f"grid key 'samples': every value must be a whole number from 1 to {MAX_SAMPLES}"
                )
        return grid

    def variants(self) -> list[Variant]:
        """Each grid point's settings and samples, with the setting names the user set explicitly."""
        explicit = set(self.settings.model_fields_set)
        if not self.grid:
            return [Variant(self.settings, explicit, self.samples)]
        keys = sorted(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            update = dict(zip(keys, values, strict=True))
            samples = int(update.pop("samples", self.samples))
            settings = GenerationSettings.model_validate(
                {**self.settings.model_dump(exclude_unset=True), **update}
            )
            out.append(Variant(settings, explicit | set(update), samples))
        return out


class Variant(NamedTuple):
    """One point of a model's grid: its settings, the names set explicitly, and its samples per example."""

    settings: GenerationSettings
    explicit: set[str]
    samples: int


class BaselineSpec(BaseModel):
    """A trained model (the original study's approach) evaluated beside the prompts: the floor to beat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["classical", "cnn"]
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict, description="Constructor options, e.g. epochs.")


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="MLflow experiment name.")
    description: str = ""
    task: Path
    dataset: DatasetConfig
    prompts: list[PromptRef] = Field(min_length=1)
    models: list[ModelSpec] = Field(default_factory=list)
    baselines: list[BaselineSpec] = Field(default_factory=list)
    prompts_dir: Path = Path("../prompts")
    prices: Path | None = Field(
        None, description="Price table; unset: prices.yaml beside this file, else the one promptgrade ships."
    )
    base_url: str | None = None
    concurrency: int = Field(8, ge=1, le=256)
    max_retries: int = Field(4, ge=0, le=20)
    retry_initial_s: float = Field(1.0, gt=0, le=60, description="First backoff; doubles, with jitter.")
    retry_max_s: float = Field(60.0, gt=0, le=3600)
    retry_answers: list[Literal["blocked", "empty", "truncated", "malformed"]] = Field(
        default_factory=list, description="Answer-like failures to retry as if transient (default: none)."
    )
    max_consecutive_failures: int = Field(
        10, ge=1, description="A model failing this often in a row stops the sweep."
    )
    max_cost_usd: float | None = Field(
        None, gt=0, description="Stop before spending more than this (per run)."
    )
    max_calls: int | None = Field(None, ge=1, description="Stop before making more API requests than this.")
    primary_metric: Literal[PRIMARY_METRICS] = "category_accuracy"  # type: ignore[valid-type]
    trace_examples: bool | None = Field(
        None,
        description="One MLflow trace per example with its truth and scores (default on; off for huge "
        "sweeps). Unset: on unless PROMPTGRADE_TRACE_EXAMPLES=0.",
    )

    # Set by load_experiment; not part of the file.
    path: Path = Field(default=Path("."), exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else (self.base_dir / relative).resolve()


class Plan(BaseModel):
    """A loaded experiment with everything it refers to, ready to run."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    experiment: Experiment
    task: Task
    prompts: list[PromptVersion]
    prices: dict[str, Price]
    released: dict[str, bool]
    image_tokens: dict[str, ImageTokenRule] = Field(default_factory=dict)
    prices_path: Path | None = None  # the table in use; None: no table found, every cost unknown
    prices_as_of: str | None = None

    def image_rule(self, model: str) -> ImageTokenRule | None:
        return longest_prefix(model, self.image_tokens)


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    experiment = load_model(Experiment, path, "experiment file")
    experiment.path = path.resolve()
    return experiment


def _prompt_line(path: Path, index: int) -> int | None:
    _, node = read_yaml(path, "experiment file")
    return line_of(node, ("prompts", index))


def plan_experiment(experiment: Experiment) -> Plan:
    """Resolve the task, prompt versions and prices; render every template once to catch errors."""
    task = load_task(experiment.resolve(experiment.task))
    library = PromptLibrary(experiment.resolve(experiment.prompts_dir))
    prompts: list[PromptVersion] = []
    for index, ref in enumerate(experiment.prompts):
        try:
            available = library.versions(ref.name)
            if ref.versions == "all":
                versions = available
            elif ref.versions == "latest":
                versions = [available[-1]]
            else:
                versions = ref.versions
            for version in versions:
                prompt = library.get(ref.name, version)
                prompt.validate(task)
                if prompt not in prompts:
                    prompts.append(prompt)
        except PromptError as exc:
            if exc.path and exc.path.endswith(".jinja"):
                raise
            line = _prompt_line(experiment.path, index)
            raise ConfigError(f"prompts[{index}]: {exc.message}", path=experiment.path, line=line) from None
    released = {p.ref: library.is_released(p) for p in prompts}
    prices_path = price_table_path(experiment)
    table = load_price_table(prices_path) if prices_path else PriceTable()
    image_tokens = table.image_tokens
    shipped = shipped_price_table()
    if not image_tokens and shipped is not None and shipped != prices_path:
        image_tokens = load_price_table(shipped).image_tokens  # the rules are Google's, not the user's
    return Plan(
        experiment=experiment,
        task=task,
        prompts=prompts,
        prices=table.models,
        released=released,
        image_tokens=image_tokens,
        prices_path=prices_path,
        prices_as_of=table.as_of,
    )


class PriceTable(BaseModel):
    """``experiments/prices.yaml``: dollars per million tokens and image-token rules, by model-id prefix."""

    model_config = ConfigDict(extra="forbid")

    as_of: str | None = None
    models: dict[str, Price] = Field(default_factory=dict)
    image_tokens: dict[str, ImageTokenRule] = Field(default_factory=dict)


def load_price_table(path: Path) -> PriceTable:
    return load_model(PriceTable, path, "price table")


def load_prices(path: Path) -> dict[str, Price]:
    return load_price_table(path).models


def shipped_price_table() -> Path | None:
    """The table promptgrade ships: inside the wheel, or ``experiments/prices.yaml`` of a checkout."""
    packaged = Path(__file__).with_name("prices.yaml")
    if packaged.is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "experiments" / "prices.yaml"
    return checkout if checkout.is_file() else None


def price_table_path(experiment: Experiment) -> Path | None:
    """A table the experiment names must exist (a typo would silently make every cost unknown); without
    ``prices:``, the one beside the experiment, else the shipped one, else none."""
    if experiment.prices is not None:
        return experiment.resolve(experiment.prices)  # load_model reports a missing file with its path
    beside = experiment.base_dir / "prices.yaml"
    return beside if beside.is_file() else shipped_price_table()


def price_for(model: str, prices: dict[str, Price], *, batch: bool = False) -> Price | None:
    """Exact id first, then the longest listed id that prefixes it (``gemini-2.5-flash-001``);
    with ``batch``, that entry's batch price (None if it has none: the cost is then unknown)."""
    price = longest_prefix(model, prices)
    return price.batch() if batch and price is not None else price


__all__ = [
    "Experiment",
    "ModelSpec",
    "Plan",
    "PromptRef",
    "load_experiment",
    "plan_experiment",
    "price_for",
]
