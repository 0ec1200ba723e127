"""A sweep from experiment file to MLflow runs: the library entry point the CLI calls.

The order is deliberate: everything that can be checked for free (experiment, templates, dataset,
credentials) is checked before the first paid call, and each candidate is logged as soon as it is
done so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from promptgrade import reference_sets
from promptgrade.candidates import AnyCandidate, BaselineCandidate, Candidate, candidates_for
from promptgrade.config import Experiment, ModelSpec, Plan, load_experiment, plan_experiment
from promptgrade.data.examples import DatasetSummary, LoadedDataset
from promptgrade.data.loaders import load_dataset_split
from promptgrade.errors import ConfigError, CredentialsError, ProviderError, TrackingError
from promptgrade.estimate import CandidateEstimate, estimate, size_of
from promptgrade.prompts import PromptVersion
from promptgrade.providers.base import Provider
from promptgrade.providers.records import accepting, find
from promptgrade.providers.registry import make_provider
from promptgrade.ranking import rank_results
from promptgrade.runner import (
    CacheMode,
    CandidateResult,
    SweepListener,
    SweepStopped,
    TrackingStopped,
    run_sweep,
)
from promptgrade.scoring import Estimate, Outcome
from promptgrade.settings import Settings, load_settings
from promptgrade.tracking.payloads import ExampleTrace, Owner

if TYPE_CHECKING:
    from promptgrade.batch.executor import BatchListener, BatchOutcome
    from promptgrade.providers.batch_base import BatchBackend
    from promptgrade.tracking.writer import TrackingWriter

T = TypeVar("T")


@dataclass
class SweepReport:
    plan: Plan
    dataset: LoadedDataset
    candidates: list[AnyCandidate]
    results: list[CandidateResult] = field(default_factory=list)
    estimates: list[CandidateEstimate] = field(default_factory=list)
    sweep_run_id: str | None = None
    tracking_uri: str | None = None
    resumed: bool = False

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.results)

    @property
    def cache_hits(self) -> int:
        return sum(r.cache_hits for r in self.results)

    @property
    def primary_metric(self) -> str:
        return self.plan.experiment.primary_metric

    def best(self) -> CandidateResult | None:
        """The first of ``ranked()``, if any candidate was scored on the primary metric."""
        ranked = self.ranked()
        if not ranked or math.isnan(primary_value(ranked[0], self.primary_metric)):
            return None
        return ranked[0]

    def ranked(self) -> list[CandidateResult]:
        """The candidates that ran, best first: the ranking every command uses (``promptgrade.ranking``),
        so that the winner printed here is the one ``compare``, ``report`` and ``promote`` name."""
        return rank_results([r for r in self.results if r.skipped_reason is None], self.primary_metric)


def primary_value(result: CandidateResult, metric: str) -> float:
    value = result.metrics.get(metric, math.nan)
    return value.value if isinstance(value, Estimate) else float(value)


class Sweep:
    """A sweep in three steps, so every free check happens before anything is shown or paid for:
    construct (experiment, templates, dataset), ``connect`` (credentials), then ``run``."""

    def __init__(
        self,
        experiment_path: str | Path,
        *,
        limit: int | None = None,
        batch: bool = False,
        settings: Settings | None = None,
    ) -> None:
        # read first: a malformed variable is one line before the dataset is read or anything is paid
        self.settings = settings if settings is not None else load_settings()
        self.plan = plan_experiment(load_experiment(experiment_path))
        if batch:
            self.plan.experiment.models = batch_models(self.plan.experiment.models)
        check_batch_models(self.plan.experiment.models)
        config = self.plan.experiment.dataset
        if limit is not None:
            config = config.model_copy(update={"limit": limit})
        self.dataset = load_dataset_split(config, self.plan.task, self.plan.experiment.base_dir)
        self.plan.prompts = with_references(self.plan, self.dataset)
        self.prompt_candidates = candidates_for(self.plan)
        check_images_per_request(self.prompt_candidates)
        self.baselines = [BaselineCandidate(spec) for spec in self.plan.experiment.baselines]
        self.candidates: list[AnyCandidate] = [*self.prompt_candidates, *self.baselines]
        self.results = {c.key: CandidateResult(c) for c in self.candidates}
        self.providers: dict[tuple[str, str], Provider] | None = None
        self.stop_reason: str | None = None
        self.limit = limit
        self.batch_outcome: BatchOutcome | None = None

    @property
    def total_calls(self) -> int:
        """Examples to grade in all: what the overall progress bar counts."""
        runnable = len(self.runnable) + len(self.runnable_baselines)
        return runnable * (len(self.dataset.examples) + len(self.dataset.skipped))

    @property
    def runnable(self) -> list[Candidate]:
        return [c for c in self.prompt_candidates if self.results[c.key].skipped_reason is None]

    @property
    def runnable_baselines(self) -> list[BaselineCandidate]:
        return [c for c in self.baselines if self.results[c.key].skipped_reason is None]

    def estimate(self) -> SweepReport:
        sizes = [size_of(example.image) for example in self.dataset.examples]
        report = SweepReport(self.plan, self.dataset, self.candidates)
        report.estimates = estimate(self.plan, self.prompt_candidates, sizes)
        return report

    def connect(self) -> None:
        """One provider per model; a model without credentials skips its candidates, with the reason.

        If no candidate can run at all, the credentials error itself is raised: one clear line.
        """
        providers: dict[tuple[str, str], Provider] = {}
        failures: dict[tuple[str, str], CredentialsError] = {}
        experiment = self.plan.experiment
        for spec in experiment.models:
            key = (spec.provider, spec.model)
            if key in providers or key in failures:
                continue
            try:
                providers[key] = provider_for(spec, experiment, self.settings)
            except CredentialsError as exc:
                failures[key] = exc
        for candidate in self.prompt_candidates:
            if (error := failures.get((candidate.provider, candidate.model))) is not None:
                self.results[candidate.key].skipped_reason = error.message
        if self.baselines:
            # scikit-learn and scipy cost a second of import: only when the experiment trains baselines
            from promptgrade.baseline.evaluate import unavailable_reason

            for baseline in self.baselines:
                self.results[baseline.key].skipped_reason = unavailable_reason(baseline)
        if failures and not providers and not self.runnable_baselines:
            raise next(iter(failures.values()))
        self.providers = providers

    def sweep_key(self) -> str:
        """Identifies "the same sweep": same candidates on the same data (what resume looks for)."""
        payload = [
            self.plan.experiment.name,
            self.dataset.sha256,
            self.dataset.split,
            *sorted(self.candidate_keys),
        ]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]

    @property
    def candidate_keys(self) -> list[str]:
        return [c.key for c in self.candidates]

    def run(
        self,
        *,
        tracking_uri: str | None = None,
        listeners: list[SweepListener] | None = None,
        cache: CacheMode | None = None,
        batch_wait: bool = True,
        batch_listener: BatchListener | None = None,
    ) -> SweepReport:
        """Run (or resume) the sweep. Raises SweepStopped after logging partial results, if stopped.

        Batch candidates' requests go to Gemini batch jobs first (``BatchesPending`` if not waiting);
        once their answers are in the cache, the same sweep scores and logs them without a call.
        """
        from promptgrade.tracking.writer import TrackingWriter

        # The writer's process starts first: MLflow's import and the store's connection overlap with
        # connecting to the providers and any batch jobs.
        experiment = self.plan.experiment
        tracker = TrackingWriter(experiment.name, tracking_uri, trace_examples=experiment.trace_examples)
        try:
            return self._run_tracked(tracker, cache, batch_wait, batch_listener, listeners or [])
        finally:
            tracker.close()

    def _run_tracked(
        self,
        tracker: TrackingWriter,
        cache: CacheMode | None,
        batch_wait: bool,
        batch_listener: BatchListener | None,
        listeners: list[SweepListener],
    ) -> SweepReport:
        if self.providers is None:
            self.connect()
        if batch := [c for c in self.runnable if c.batch]:
            self._run_batches(batch, cache, wait=batch_wait, listener=batch_listener)
        plan, dataset = self.plan, self.dataset
        summary = dataset.summary()
        report = SweepReport(plan, dataset, self.candidates)
        report.tracking_uri = tracker.uri
        report.resumed, report.sweep_run_id = tracker.call(
            "start_sweep",
            plan.experiment.path,
            summary,
            len(self.candidates),
            self.sweep_key(),
            Owner.this_process(),
        )
        all_listeners = [_TrackingListener(tracker, dataset, self.results), *listeners]
        primary = plan.experiment.primary_metric
        try:
            self._run_baselines(tracker, summary, all_listeners)
        except BaseException:
            self._stop_tracking(tracker, primary)
            raise
        todo = self._candidate_runs(tracker, summary)
        tracker.warm_plots()
        self.stop_reason = None
        # Everything alive now (modules, the dataset) lives through the request phase: frozen, the
        # cyclic collector stops re-scanning it on every collection (~0.2 ms of CPU per call at
        # concurrency 32 in benchmarks/throughput.py's conditions). No full collection first: it cost
        # 0.35 s per sweep in a process that has imported much (a test session, a notebook), and the
        # little garbage frozen with the rest is only kept until the unfreeze below.
        gc.freeze()
        try:
            finished_results = self._run_and_close(
                run_sweep(
                    plan,
                    dataset,
                    todo,
                    self.providers or {},
                    all_listeners,
                    cache=cache,
                    results=self.results,
                )
            )
            tracker.drain()
        except SweepStopped as stop:
            self.stop_reason = stop.message
            report.results = [self.results[c.key] for c in self.candidates]
            if tracker.error is not None:
                raise TrackingStopped(tracker.error.message) from None
            self._stop_tracking(tracker, primary, stop.message)
            raise
        except TrackingError as exc:
            self.stop_reason = exc.message
            raise TrackingStopped(exc.message) from None
        except BaseException:
            self._stop_tracking(tracker, primary)
            raise
        finally:
            gc.unfreeze()  # a library caller's later garbage is collected as usual
        for result in finished_results:
            self.results[result.candidate.key] = result
        report.results = [self.results[c.key] for c in self.candidates]
        try:
            tracker.call("finish_sweep", report.results, primary)
        except TrackingError as exc:
            raise TrackingStopped(exc.message) from None
        return report

    def _candidate_runs(self, tracker: TrackingWriter, summary: DatasetSummary) -> list[Candidate]:
        """Each runnable candidate's run (created, or found when resuming); the ones still to run."""
        plan = self.plan
        todo: list[Candidate] = []
        for candidate in self.runnable:
            result = self.results[candidate.key]
            result.run_id, finished = tracker.call(
                "candidate_run", candidate, summary, plan.task, plan.experiment.dataset.image_max_side
            )
            if finished:
                result.metrics = unflatten(tracker.call("finished_metrics", result.run_id))
            else:
                todo.append(candidate)
        return todo

    def _stop_tracking(self, tracker: TrackingWriter, primary: str, reason: str | None = None) -> None:
        """Mark what did not finish as killed — unless the store itself is what failed (then nothing
        more can be written, and its error is the one the user must see)."""
        if tracker.error is not None:
            return
        results = list(self.results.values())
        tracker.post("kill_unfinished", [r.run_id for r in results if r.run_id])
        tracker.post("finish_sweep", results, primary, "KILLED", reason)
        with contextlib.suppress(TrackingError):
            tracker.drain()

    def _run_batches(
        self,
        candidates: list[Candidate],
        cache: CacheMode | None,
        *,
        wait: bool,
        listener: BatchListener | None,
    ) -> None:
        """Submit what no job holds, wait (or stop, resumable), collect into the cache; then the runner
        sees these models through ``JournalAnswers``, which never calls."""
        from promptgrade.batch.phase import BatchPhase, batch_cache

        answers_cache = batch_cache(cache, "sweep")
        experiment = self.plan.experiment
        specs = {(c.provider, c.model): c.spec for c in candidates}
        clients: dict[tuple[str, str], BatchBackend] = {}
        try:
            for key, spec in specs.items():
                clients[key] = batch_client(spec, experiment, self.settings)
            phase = BatchPhase(
                self.plan,
                self.dataset,
                candidates,
                clients,
                answers_cache,
                poll_s=self.settings.batch_poll_s,
                max_requests=self.settings.batch_max_requests,
            )
            self.batch_outcome = phase.outcome
            answers = phase.run(wait=wait, listener=listener)
        finally:  # a model's fields or credentials refused, a stop, or done: close what was opened
            for client in clients.values():
                client.close()
        self.providers = {**(self.providers or {}), **answers}

    def _run_and_close(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on a new event loop, and close the providers' HTTP sessions (they belong to that
        loop) before it ends.

        The loop's main coroutine hands its result back through a box and itself returns None: at its
        end ``asyncio.run`` restores the Ctrl-C handler, and the standard library's ``signal`` module,
        converting the handler it replaces, builds the repr of the main task — the result included.
        A sweep's result holds every outcome, so that repr grew with the sweep: 77 ms after the last
        answer of a 1,280-example sweep (benchmarks/throughput.py's conditions), twice ~30 µs per outcome.
        """
        box: list[T] = []

        async def main() -> None:
            try:
                box.append(await work)
            finally:
                for provider in (self.providers or {}).values():
                    await provider.aclose()

        asyncio.run(main())
        return box[0]

    def _run_baselines(
        self, tracker: TrackingWriter, summary: DatasetSummary, listeners: list[SweepListener]
    ) -> None:
        """Train each baseline on the training split and score it on the evaluation split (never seen)."""
        if not self.runnable_baselines:
            return
        from promptgrade.baseline.evaluate import evaluate_baseline

        plan = self.plan
        config = plan.experiment.dataset
        train = load_dataset_split(
            config.model_copy(update={"limit": self.limit}) if self.limit else config,
            plan.task,
            plan.experiment.base_dir,
            split=config.train_split,
        )
        for candidate in self.runnable_baselines:
            result = self.results[candidate.key]
            result.run_id, finished = tracker.call(
                "baseline_run", candidate, summary, train.summary(), plan.task
            )
            if finished:
                result.metrics = unflatten(tracker.call("finished_metrics", result.run_id))
                continue
            model = evaluate_baseline(candidate, plan.task, train, self.dataset, result, listeners)
            samples = [e.image.data for e in self.dataset.examples[:2]]
            if samples:
                tracker.post("log_model", result.run_id, model, plan.task, samples)
            for listener in listeners:
                listener.candidate_done(result)


def with_references(plan: Plan, evaluated: LoadedDataset) -> list[PromptVersion]:
    """The plan's prompt versions with their reference images resolved and prepared, once per sweep.

    A rule draws from another split of the experiment's dataset, loaded whole (``--limit`` is for the
    evaluated trays) and at most once per split.
    """
    config = plan.experiment.dataset.model_copy(update={"limit": None})
    splits: dict[str, LoadedDataset] = {}

    def load_split(split: str) -> LoadedDataset:
        if split not in splits:
            splits[split] = load_dataset_split(config, plan.task, plan.experiment.base_dir, split=split)
        return splits[split]

    return [
        reference_sets.resolve(
            prompt,
            plan.task,
            image_max_side=config.image_max_side,
            evaluated=evaluated,
            load_split=load_split,
        )
        for prompt in plan.prompts
    ]


def check_images_per_request(candidates: list[Candidate]) -> None:
    """A prompt that shows more images than the model's API takes in one request is one line now,
    not a 400 on every call."""
    for candidate in candidates:
        record = find(candidate.provider)
        images = 1 + len(candidate.references)
        if record is not None and record.max_images is not None and images > record.max_images:
            raise ConfigError(
                f"{candidate.prompt.ref} shows {images} images per request (the tray and "
                f"{len(candidate.references)} references); {record.title} takes at most {record.max_images}",
                path=candidate.prompt.where,
            )


def endpoint(spec: ModelSpec, experiment: Experiment | None, settings: Settings) -> str | None:
    """The model's own endpoint; else the experiment's, if its record says the experiment-level
    ``base_url`` is this provider's too (Gemini's, today); else the lab's variable its record names
    (``OPENAI_BASE_URL``, ``GOOGLE_GEMINI_BASE_URL`` …); else None, the provider's public API."""
    record = find(spec.provider)
    if record is None:
        return spec.base_url
    shared = experiment.base_url if experiment is not None and record.experiment_base_url else None
    return spec.base_url or shared or settings.lab_endpoint(record.lab_endpoint_env)


def provider_for(
    spec: ModelSpec, experiment: Experiment | None, settings: Settings | None = None
) -> Provider:
    """The provider of one experiment model, at its endpoint, with what the lab resolves from its
    settings (a key from the variable the model names, the request-building switch): providers ship
    in the Lambda and read no settings of their own."""
    settings = settings if settings is not None else load_settings()
    return make_provider(
        spec.provider,
        spec.model,
        base_url=endpoint(spec, experiment, settings),
        timeout_s=spec.timeout_s,
        **spec.provider_fields(),
        convert_per_call=settings.gemini_convert_per_call,
        api_key=settings.openai_key(spec.api_key_env),  # an OpenAI-compatible key; others ignore it
    )


def batch_client(spec: ModelSpec, experiment: Experiment | None, settings: Settings) -> BatchBackend:
    """The batch back-end the model's record names (config validation admits no other), at the model's
    online endpoint (its answers' keys carry it), with the arguments its record says it takes; a job
    waits for long polls, so its timeout is never under two minutes."""
    record = find(spec.provider)
    if record is None or record.batch is None:
        raise ConfigError(f"batch: {spec.provider} models have no batch back-end")
    options: dict[str, Any] = {
        **{name: getattr(spec, name) for name in record.fields | record.batch_fields},
        "inline_limit_bytes": settings.batch_inline_bytes,
        "min_records": settings.bedrock_batch_min_records,
        "api_key": settings.openai_key(spec.api_key_env),  # an OpenAI-compatible key; others ignore it
    }
    try:
        back_end: BatchBackend = record.batch_class()(
            spec.model,
            endpoint(spec, experiment, settings),
            max(spec.timeout_s, 120),
            **{name: value for name, value in options.items() if name in record.batch_options},
        )
    except ModuleNotFoundError as exc:
        raise ProviderError(
            f"batch jobs on {record.title} need the {record.package} package ({exc.name} is missing): "
            f"pip install {record.package}"
        ) from None
    return back_end


def batch_models(models: list[ModelSpec]) -> list[ModelSpec]:
    """``--batch``: every model as batch jobs; a model without a batch API is one clear line."""
    batched = {record.name for record in accepting("batch")}
    others = sorted({f"{m.provider}/{m.model}" for m in models if m.provider not in batched})
    if others:
        titles = " or ".join(record.title for record in accepting("batch"))
        raise ConfigError(
            f"--batch: only {titles} models run as batch jobs, not {', '.join(others)}; set `batch: true` "
            f"on the {titles} models in the experiment instead"
        )
    return [m.model_copy(update={"batch": True}) for m in models]


def check_batch_models(models: list[ModelSpec]) -> None:
    """A model is swept one way: its batch and online candidates would share one provider and price.
    A batch model has every field its provider's batch jobs need (a Bedrock job's S3 prefix and role)."""
    batch = {(m.provider, m.model) for m in models if m.batch}
    online = {(m.provider, m.model) for m in models if not m.batch}
    if both := sorted(batch & online):
        raise ConfigError(f"{both[0][1]} is listed both with and without `batch: true`: choose one")
    for spec in models:
        record = find(spec.provider)
        missing = (
            sorted(name for name in record.batch_fields if getattr(spec, name) is None) if record else []
        )
        if spec.batch and record is not None and missing:
            raise ConfigError(
                f"{spec.model}: {record.title} batch jobs need {' and '.join(missing)}: set "
                f"{'them' if len(missing) > 1 else 'it'} on the model (see the README's Batch mode)"
            )


def unflatten(flat: dict[str, float]) -> dict[str, Estimate | float]:
    """Metrics read back from MLflow, with their intervals, as the runner produced them."""
    out: dict[str, Estimate | float] = {}
    n = int(flat.get("n_examples", 0))
    for name, value in flat.items():
        if name.endswith(("_ci_low", "_ci_high")):
            continue
        if f"{name}_ci_low" in flat:
            out[name] = Estimate(
                value=value, ci_low=flat[f"{name}_ci_low"], ci_high=flat[f"{name}_ci_high"], n=n
            )
        else:
            out[name] = value
    return out


HEARTBEAT_S = 30.0  # how often a running sweep tells its tracking store it is alive


class _TrackingListener:
    """Hands each answer's trace and each finished candidate to the writer — never waits for it — and
    stops the sweep as soon as the writer reports that the store is gone."""

    def __init__(
        self, tracker: TrackingWriter, dataset: LoadedDataset, results: dict[str, CandidateResult]
    ) -> None:
        self.tracker = tracker
        self.examples = {e.id: e for e in dataset.examples}
        self.results = results
        self.heard = time.monotonic()

    def candidate_started(self, candidate: Candidate, total: int) -> None:
        pass

    def example_done(self, candidate: Candidate, outcome: Outcome) -> None:
        tracker = self.tracker
        if tracker.error is not None:
            raise TrackingStopped(tracker.error.message)
        if (now := time.monotonic()) - self.heard > HEARTBEAT_S:
            self.heard = now
            tracker.post("heartbeat")  # this sweep's run is still in use: no other sweep takes it over
        run_id = self._run_id(candidate)
        if run_id is None or not tracker.trace_examples or outcome.status == "skipped":
            return
        example = self.examples.get(outcome.example_id)
        image = example.image if example is not None else None
        tracker.trace(
            run_id,
            ExampleTrace(
                outcome,
                time.time_ns(),
                image.data if image is not None else None,
                image.mime_type if image is not None else None,
            ),
        )

    def _run_id(self, candidate: Candidate | BaselineCandidate) -> str | None:
        result = self.results.get(candidate.key)
        return result.run_id if result is not None else None

    def candidate_done(self, result: CandidateResult) -> None:
        if result.run_id is None:
            return
        self.tracker.flush_traces(result.run_id)
        self.tracker.post("log_candidate", result)

    def training(self, candidate: object, stage: str, fraction: float) -> None:
        pass
