"""Reflective prompt search: the evaluator writes the next prompt, as a plain versioned template.

GEPA's loop, small enough to read in one sitting, on our own runner: pick a parent from the Pareto
front of per-example wins on the optimisation split, show a reflection model the parent's failures on
a minibatch of training trays, check its proposed template for free, try it on the same minibatch,
and only if it does better there, evaluate it on the whole optimisation split. Every model call — the
task model's and the reflection model's — goes through the runner: the answer cache (re-running the
same command re-buys nothing and proposes the same templates), rate limits, retries, the answer
parsers and one budget for the whole search.

The evaluation split is never touched: proposals are evaluated on ``validation`` when the dataset
has one (failures are shown from ``train_split``), else on ``train_split`` alone.

A prompt that shows reference trays is searched with them: every node carries its references, a
rewrite keeps its parent's, and with ``--references N`` each round also tries N reference changes
(``reference_changes``) drawn from ``train_split``. A tray a prompt shows is never one it is scored on
in a minibatch.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptgrade.candidates import Candidate
from promptgrade.config import ModelSpec, Plan, PromptRef, load_experiment, plan_experiment, price_for
from promptgrade.data.examples import Example, LoadedDataset
from promptgrade.data.loaders import SplitNotFound, load_dataset_split
from promptgrade.errors import ConfigError, DatasetError, PromptError, PromptgradeError
from promptgrade.estimate import request_input_tokens, size_of
from promptgrade.grading import build_request, effective_settings
from promptgrade.optimize import reflection
from promptgrade.optimize.pool import Minibatches, Node, per_example_score, select_parent, worth_writing
from promptgrade.optimize.proposals import answer_format, check_proposal
from promptgrade.optimize.reference_changes import (
    ReferenceMoves,
    max_references,
    missed_categories,
    reference_ids,
    resolve_start,
)
from promptgrade.optimize.versions import Provenance, write_versions
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.providers.base import Provider
from promptgrade.references import Reference
from promptgrade.runner import Budget, CacheMode, Caller, SweepStopped, run_sweep
from promptgrade.scoring import Outcome, summarise
from promptgrade.settings import load_settings
from promptgrade.tokens import EXPECTED_OUTPUT_TOKENS, text_tokens

if TYPE_CHECKING:
    from promptgrade.batch.journal import JobRecord
    from promptgrade.providers.batch_base import BatchBackend, JobStatus
    from promptgrade.tracking.optimize import OptimizationTracker  # mlflow: only when a search runs

GROWTH = 2  # a proposal may be at most this many times the start template's length (keeps the bound true)
MIN_MAX_CHARS = 4000


class BudgetTooSmall(ConfigError):
    """The budget cannot pay for one round of the search: refused before anything is spent."""


@dataclass(frozen=True)
class Options:
    prompt: str  # name@version to start from
    reflection_model: str | None = None
    max_calls: int | None = None
    max_cost_usd: float | None = None
    candidates: int = 3  # proposals per round; also how many of the best are written
    max_rounds: int = 5
    minibatch: int = 8
    metric: str | None = None  # default: the experiment's primary metric
    validation_split: str = "validation"
    limit: int | None = None  # the first N examples of each split (tests, trials)
    seed: int = 0
    references: int = 0  # reference changes tried per round, besides the ``candidates`` rewrites
    batch: bool = False  # the task models' evaluations as provider batch jobs (the reflection stays online)


@dataclass(frozen=True)
class Bound:
    """Calls and dollars the search can spend at most, before the cache saves any of it."""

    seed_calls: int
    proposal_calls: int  # one proposal tried in full: parent + proposal on the minibatch, reflection, split
    rounds: int
    per_round: int
    seed_cost: float | None
    proposal_cost: float | None
    references_per_round: int = 0
    reference_calls: int = 0  # one reference change tried in full: as a proposal, without reflection
    reference_cost: float | None = 0.0

    @property
    def calls(self) -> int:
        per_round = self.per_round * self.proposal_calls + self.references_per_round * self.reference_calls
        return self.seed_calls + self.rounds * per_round

    @property
    def cost_usd(self) -> float | None:
        if self.seed_cost is None or self.proposal_cost is None or self.reference_cost is None:
            return None
        per_round = self.per_round * self.proposal_cost + self.references_per_round * self.reference_cost
        return self.seed_cost + self.rounds * per_round

    @property
    def min_calls(self) -> int:
        return self.seed_calls + self.proposal_calls

    @property
    def min_cost_usd(self) -> float | None:
        if self.seed_cost is None or self.proposal_cost is None:
            return None
        return self.seed_cost + self.proposal_cost


@dataclass
class Report:
    nodes: list[Node]
    written: list[tuple[Node, Path]]
    stop_reason: str
    calls: int
    spent_usd: float
    run_id: str | None
    tracking_uri: str | None
    stop_kind: str = ""

    @property
    def start(self) -> Node:
        return self.nodes[0]

    @property
    def resumable(self) -> bool:
        """Stopped by a quota or a failing model: the same command later continues from the cache."""
        return self.stop_kind in ("quota", "failing")


class Optimization:
    """An optimisation in three steps, like a sweep: construct (every free check), ``connect``, ``run``."""

    def __init__(self, experiment_path: str | Path, options: Options) -> None:
        self.options = options
        if options.candidates < 1 or options.max_rounds < 1 or options.minibatch < 1:
            raise ConfigError("--candidates, --max-rounds and --minibatch must be at least 1")
        if options.references < 0:
            raise ConfigError("--references must be 0 or more")
        plan = plan_experiment(load_experiment(experiment_path))
        experiment = plan.experiment
        if not experiment.models:
            raise ConfigError("the experiment has no models to optimise a prompt for", path=experiment.path)
        self.metric = options.metric or experiment.primary_metric
        if self.metric not in ("category_accuracy", "category_top1_accuracy", "grade_accuracy", "grade_mae"):
            raise ConfigError(f"cannot optimise {self.metric!r}")
        self.task = plan.task
        self.task_specs = self._task_specs(experiment.models)
        self.prompts_dir = experiment.resolve(experiment.prompts_dir)
        self.library = PromptLibrary(self.prompts_dir)
        self.start = self._start_prompt(options.prompt)
        self.reflect_prompt = reflection.reflection_prompt(self.prompts_dir)
        self.reflection = reflection.reflection_spec(plan, options.reflection_model)
        models = list(self.task_specs)
        if all((s.provider, s.model) != (self.reflection.provider, self.reflection.model) for s in models):
            models.append(self.reflection)  # the runner keeps limits and health per model
        self.plan: Plan = plan.model_copy(
            update={"experiment": experiment.model_copy(update={"models": models})}
        )
        self.train, self.validation = self._splits()
        self.evaluated_on = self.validation or self.train
        if options.references and self.validation is None:
            raise DatasetError(
                f"--references needs a validation split to score proposals on (none named "
                f"{options.validation_split!r}): the references come from the training split "
                f"{self.train.split!r}, and a prompt may not be scored on the trays it shows",
                path=experiment.path,
            )
        self._full_splits: dict[str, LoadedDataset] = {}
        self.start = self._start_references()
        self.moves = self._reference_moves()
        self.structured = {
            spec.model: effective_settings(self.start, s, explicit=e).structured_output
            for spec in experiment.models
            for s, e, _ in spec.variants()
        }
        self.max_chars = max(GROWTH * len(self.start.body), MIN_MAX_CHARS)
        # the longest rendered prompt a proposal may have: what the bound assumes for every proposal
        self.max_rendered_chars = len(self._widest().render(self.task)) + self.max_chars
        self.max_calls = options.max_calls if options.max_calls is not None else experiment.max_calls
        self.max_cost_usd = (
            options.max_cost_usd if options.max_cost_usd is not None else experiment.max_cost_usd
        )
        self.providers: dict[tuple[str, str], Provider] | None = None
        self.batch_clients: dict[tuple[str, str], BatchBackend] = {}
        self.batch_poll_s: float = 10.0
        self.batch_max_requests: int | None = None
        self.nodes: list[Node] = []
        self.stop_reason = ""
        self.stop_kind = ""
        self.budget = Budget(self.max_cost_usd, self.max_calls)
        self.cache = CacheMode.off()
        self.say: Callable[[str], None] = lambda message: None
        self.tracker: OptimizationTracker | None = None

    # -- free checks -----------------------------------------------------------------------------
    def _task_specs(self, models: list[ModelSpec]) -> list[ModelSpec]:
        """``--batch``: every task model as batch jobs (one clear line for a model without a batch API)."""
        if not self.options.batch:
            return list(models)
        from promptgrade.sweep import batch_models, check_batch_models

        batched = batch_models(models)
        check_batch_models(batched)
        return batched

    def _start_prompt(self, ref: str) -> PromptVersion:
        try:
            parsed = PromptRef.model_validate(ref)
        except ValueError as exc:
            raise PromptError(f"--prompt {ref!r}: expected name@<version number>") from exc
        versions = self.library.versions(parsed.name)
        if parsed.versions in ("all", "latest"):
            version = versions[-1]
        elif isinstance(parsed.versions, list) and len(parsed.versions) == 1:
            version = parsed.versions[0]
        else:
            raise PromptError(f"--prompt {ref!r}: name one version, e.g. {parsed.name}@{versions[-1]}")
        prompt = self.library.get(parsed.name, version)
        prompt.validate(self.task)
        return prompt

    def _splits(self) -> tuple[LoadedDataset, LoadedDataset | None]:
        """``train_split`` (required) and ``validation`` (if present); never the evaluation split."""
        experiment = self.plan.experiment
        config = experiment.dataset
        if self.options.limit is not None:
            config = config.model_copy(update={"limit": self.options.limit})
        evaluation = config.split
        if config.train_split == evaluation:
            raise DatasetError(
                f"train_split and the evaluation split are both {evaluation!r}: optimize never uses the "
                "evaluation split; set dataset.train_split to another split",
                path=experiment.path,
            )
        try:
            train = load_dataset_split(config, self.task, experiment.base_dir, split=config.train_split)
        except SplitNotFound as exc:
            raise DatasetError(
                f"the dataset has no training split {config.train_split!r} ({exc.message}); optimize needs "
                f"one (dataset.train_split) and never uses the evaluation split {evaluation!r}",
                path=experiment.path,
            ) from None
        if not train.examples:
            raise DatasetError(f"training split {config.train_split!r} has no usable examples")
        validation = None
        name = self.options.validation_split
        if name and name not in (evaluation, config.train_split):
            try:
                validation = load_dataset_split(config, self.task, experiment.base_dir, split=name)
            except SplitNotFound:
                validation = None
            if validation is not None and not validation.examples:
                validation = None
        return train, validation

    def _full_split(self, split: str) -> LoadedDataset:
        """A whole split (``--limit`` is for the trays scored): what a reference rule draws from."""
        if split not in self._full_splits:
            experiment = self.plan.experiment
            limited = self.options.limit is not None or experiment.dataset.limit is not None
            if not limited and split == self.train.split:
                self._full_splits[split] = self.train
            else:
                config = experiment.dataset.model_copy(update={"limit": None})
                self._full_splits[split] = load_dataset_split(
                    config, self.task, experiment.base_dir, split=split
                )
        return self._full_splits[split]

    def _evaluation_split(self) -> LoadedDataset | None:
        try:
            return self._full_split(self.plan.experiment.dataset.split)
        except SplitNotFound:
            return None

    def _start_references(self) -> PromptVersion:
        return resolve_start(
            self.start,
            self.task,
            train_split=self.train.split,
            image_max_side=self.plan.experiment.dataset.image_max_side,
            scored_on=self.evaluated_on,
            load_split=self._full_split,
            evaluation=self._evaluation_split,
        )

    def _reference_moves(self) -> ReferenceMoves | None:
        """``--references N``: the whole training split's labelled trays to draw from; a start that
        cannot show them is refused before any call."""
        if not self.options.references:
            return None
        cap = max_references(len(self.start.references), self.task_specs)
        moves = ReferenceMoves(
            self._full_split(self.train.split), self.task, max_references=cap, seed=self.options.seed
        )
        moves.check(self.start)
        return moves

    def _widest(self) -> PromptVersion:
        """The start prompt showing the most references a proposal may show, each the training tray
        with the longest labels: the longest text (and most images) a proposal's requests can have."""
        if self.moves is None:
            return self.start
        longest = max(self.moves.trays, key=lambda t: len(t.id) + len("; ".join(t.categories)))
        return self.start.with_references((longest,) * self.moves.max_references)

    def candidates_for(self, prompt: PromptVersion) -> list[Candidate]:
        out = []
        for spec in self.task_specs:
            for settings, explicit, samples in spec.variants():
                final = effective_settings(prompt, settings, explicit=explicit)
                out.append(Candidate(prompt, spec, final, prompt.render_prompt(self.task), samples))
        return out

    def bound(self) -> Bound:
        """The most the search can make in calls and dollars (a proposal's length is capped, so this
        holds for every proposal, not only the start prompt)."""
        evaluated = self.evaluated_on.examples
        m = min(self.options.minibatch, len(self.train.examples))
        per_example = sum(c.samples for c in self.candidates_for(self.start))  # k requests per tray each
        seed_calls = per_example * len(evaluated)
        proposal_calls = 2 * m * per_example + 1 + per_example * len(evaluated)
        longest = "x" * self.max_rendered_chars
        start_images = _sizes(self.start.references)
        most_images = _sizes(self._widest().references)
        seed_cost = self._cost(self.start.render(self.task), evaluated, start_images)
        long_split = self._cost(longest, evaluated, most_images)
        long_batch = self._cost(longest, self.train.examples[:m], most_images)
        reflect = self._reflection_cost(m)
        proposal_cost = (
            None
            if None in (seed_cost, long_split, long_batch, reflect)
            else 2 * long_batch + reflect + long_split  # type: ignore[operator]
        )
        reference_cost = (
            None if None in (long_split, long_batch) else 2 * long_batch + long_split  # type: ignore[operator]
        )
        return Bound(
            seed_calls=seed_calls,
            proposal_calls=proposal_calls,
            rounds=self.options.max_rounds,
            per_round=self.options.candidates,
            seed_cost=seed_cost,
            proposal_cost=proposal_cost,
            references_per_round=self.options.references,
            reference_calls=proposal_calls - 1 if self.options.references else 0,
            reference_cost=reference_cost if self.options.references else 0.0,
        )

    def _cost(
        self, prompt: str, examples: list[Example], references: tuple[tuple[int, int], ...] = ()
    ) -> float | None:
        total = 0.0
        for candidate in self.candidates_for(self.start):
            price = price_for(candidate.model, self.plan.prices, batch=candidate.batch)
            if price is None:
                return None
            output = candidate.settings.max_output_tokens or EXPECTED_OUTPUT_TOKENS
            media = candidate.settings.media_resolution
            for example in examples:
                tokens = request_input_tokens(
                    self.plan, candidate.model, prompt, size_of(example.image), media, references
                )
                total += price.cost(tokens, output) * candidate.samples
        return total

    def _reflection_cost(self, m: int) -> float | None:
        price = price_for(self.reflection.model, self.plan.prices)
        if price is None:
            return None
        fixed = len(self.reflect_prompt.body) + self.max_chars + self.max_rendered_chars
        per_failure = reflection.MAX_ANSWER_CHARS + 400
        width, height = reflection.sheet_size(m)
        image = request_input_tokens(self.plan, self.reflection.model, "", (width, height), None)
        tokens = image + text_tokens("x" * (fixed + m * per_failure))
        return price.cost(tokens, self.reflection.settings.max_output_tokens or EXPECTED_OUTPUT_TOKENS)

    def check_budget(self, bound: Bound) -> None:
        """Refuse a budget that cannot pay for the start prompt's evaluation and one proposal."""
        evaluated = f"{len(self.evaluated_on.examples)} examples of {self.evaluated_on.split!r}"
        if self.max_calls is not None and self.max_calls < bound.min_calls:
            raise BudgetTooSmall(
                f"max calls {self.max_calls} is too small for one round of the search: evaluating "
                f"{self.start.ref} on {evaluated} and trying one proposal needs up to {bound.min_calls} calls "
                f"({bound.seed_calls} + {bound.proposal_calls}); raise --max-calls to at least {bound.min_calls}"
            )
        cost = bound.min_cost_usd
        if self.max_cost_usd is not None and cost is not None and self.max_cost_usd < cost:
            raise BudgetTooSmall(
                f"max cost ${self.max_cost_usd:g} is too small for one round of the search: evaluating "
                f"{self.start.ref} on {evaluated} and trying one proposal may cost up to ${cost:.4f}; "
                f"raise --max-cost-usd to at least {math.ceil(cost * 10000) / 10000:g}"
            )

    def connect(self) -> None:
        """One provider per model (task models and the reflection model); a missing key is one line."""
        from promptgrade.sweep import provider_for

        providers: dict[tuple[str, str], Provider] = {}
        experiment = self.plan.experiment
        for spec in experiment.models:
            if (spec.provider, spec.model) not in providers:
                providers[(spec.provider, spec.model)] = provider_for(spec, experiment)
        self.providers = providers
        if self.options.batch:
            self._connect_batches()

    def _connect_batches(self) -> None:
        """The task models' batch back-ends, kept for the whole search. A service with a minimum job
        size (Bedrock's 100 records) is refused now: a minibatch evaluation (8 trays, part of them
        cached) is far below it, so its requests would only ever be held back, never answered."""
        from promptgrade.sweep import batch_client

        settings = load_settings()
        experiment = self.plan.experiment
        try:
            for spec in self.task_specs:
                key = (spec.provider, spec.model)
                if key in self.batch_clients:
                    continue
                client = self.batch_clients[key] = batch_client(spec, experiment, settings)
                if client.limits.min_requests > 1:
                    raise ConfigError(
                        f"optimize --batch: {spec.model}'s batch jobs take at least "
                        f"{client.limits.min_requests} requests, and the search's minibatch evaluations hold "
                        f"{self.options.minibatch} trays or fewer: optimise it online (drop --batch), or "
                        "batch only the final sweep of the versions it writes"
                    )
        except BaseException:
            self._close_batches()
            raise
        self.batch_poll_s, self.batch_max_requests = settings.batch_poll_s, settings.batch_max_requests

    def _close_batches(self) -> None:
        for client in self.batch_clients.values():
            client.close()
        self.batch_clients = {}

    # -- the search ------------------------------------------------------------------------------
    def run(
        self,
        *,
        tracking_uri: str | None = None,
        cache: CacheMode | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> Report:
        """Search, write the best proposals as new unreleased versions, log it all to one MLflow run.

        Ctrl-C (KeyboardInterrupt) keeps what was found: the best proposals so far are written and
        the run is marked killed before the interrupt goes on to the caller.
        """
        from promptgrade.tracking.optimize import OptimizationTracker

        self.check_budget(self.bound())
        self.cache = cache or CacheMode.off()
        if self.options.batch:
            from promptgrade.batch.phase import batch_cache

            batch_cache(self.cache, "optimize")
        if self.providers is None:
            self.connect()
        if on_event is not None:
            self.say = on_event
        tracker = OptimizationTracker(self.plan.experiment.name, tracking_uri)
        tracker.start(self.params())
        self.tracker = tracker
        interrupted = False
        try:
            asyncio.run(self._search_and_close())
        except KeyboardInterrupt:
            interrupted = True
            self.stop_reason = "interrupted (Ctrl-C)"
        except BaseException:
            tracker.finish(self.nodes, [], "KILLED", "crashed", self.budget)
            raise
        for node in self.nodes:
            if node.run_id is None:  # in flight when the search stopped
                if node.status == "rejected" and node.reason is None:
                    node.status, node.reason = "unfinished", self.stop_reason
                tracker.log_node(node)
        written = self.write_best(tracker.run_id)
        tracker.finish(
            self.nodes, written, "KILLED" if interrupted else "FINISHED", self.stop_reason, self.budget
        )
        report = Report(
            self.nodes,
            written,
            self.stop_reason,
            self.budget.calls,
            self.budget.spent_usd,
            tracker.run_id,
            tracker.uri,
            self.stop_kind,
        )
        if interrupted:
            raise OptimizationInterrupted(report)
        return report

    def params(self) -> dict[str, Any]:
        experiment = self.plan.experiment
        return {
            "start_prompt": self.start.ref,
            "start_prompt_sha256": self.start.sha256,
            "task_models": ", ".join(sorted({s.model for s in self.task_specs})),
            "reflection_provider": self.reflection.provider,
            "reflection_model": self.reflection.model,
            "reflection_prompt": self.reflect_prompt.ref,
            "reflection_prompt_sha256": self.reflect_prompt.sha256,
            "metric": self.metric,
            "max_calls": self.max_calls,
            "max_cost_usd": self.max_cost_usd,
            "candidates": self.options.candidates,
            "max_rounds": self.options.max_rounds,
            "minibatch": self.options.minibatch,
            "seed": self.options.seed,
            "dataset": self.train.name,
            "train_split": self.train.split,
            "train_dataset_sha256": self.train.sha256,
            "optimized_on": self.evaluated_on.split,
            "optimized_on_dataset_sha256": self.evaluated_on.sha256,
            "evaluation_split": experiment.dataset.split,
            "n_train": len(self.train.examples),
            "n_optimized_on": len(self.evaluated_on.examples),
            **(
                {"start_references": ",".join(reference_ids(self.start.references))}
                if self.start.references
                else {}
            ),
            **({"reference_changes": self.options.references} if self.options.references else {}),
            **({"batch": True} if self.options.batch else {}),
        }

    async def _search_and_close(self) -> None:
        try:
            await self._search()
        finally:
            for provider in (self.providers or {}).values():
                await provider.aclose()
            self._close_batches()

    async def _evaluate(self, node: Node, examples: list[Example], split: str) -> dict[str, Outcome]:
        """Outcomes by instance (candidate label · example id), through the runner, on the shared budget."""
        prompt = self._prompt(node)
        dataset = LoadedDataset(self.train.name, split, "", examples)
        candidates = self.candidates_for(prompt)
        providers: dict[tuple[str, str], Provider] = dict(self.providers or {})
        close: list[Provider] = []
        if self.batch_clients:
            answers = self._batch(dataset, candidates)
            providers.update(answers)
            close.extend(answers.values())
        try:
            results = await run_sweep(
                self.plan, dataset, candidates, providers, cache=self.cache, budget=self.budget
            )
        finally:
            for provider in close:
                await provider.aclose()
        many = len(results) > 1
        return {
            (f"{r.candidate.model} · {o.example_id}" if many else o.example_id): o
            for r in results
            for o in r.outcomes
            if o.status != "skipped"
        }

    def _batch(self, dataset: LoadedDataset, candidates: list[Candidate]) -> dict[tuple[str, str], Provider]:
        """This evaluation's uncached requests as batch jobs, waited for on this thread (the search has
        nothing else to do meanwhile; Ctrl-C stops the wait, the journal keeps the jobs, and the same
        command picks them up). A request no job answered stops the search, resumable: scoring it as
        a wrong answer would mislead the search."""
        from promptgrade.batch.phase import BatchPhase, batch_cache

        phase = BatchPhase(
            self.plan,
            dataset,
            candidates,
            self.batch_clients,
            batch_cache(self.cache, "optimize"),
            poll_s=self.batch_poll_s,
            max_requests=self.batch_max_requests,
            budget=self.budget,
        )
        answers = phase.run(wait=True, listener=_BatchSayer(self.say))
        outcome = phase.outcome
        for note in outcome.notes:
            self.say(f"batch: {note}")
        unanswered = [(label, row) for label, rows in outcome.failed_requests.items() for row in rows]
        if unanswered or outcome.held:
            phase.journal.close()
            first = (
                f"{unanswered[0][0]} · {unanswered[0][1][0]}: {unanswered[0][1][1]}"
                if unanswered
                else next(iter(outcome.held.values()))
            )
            raise SweepStopped(
                f"{len(unanswered) + len(outcome.held)} request(s) of this evaluation were not answered by "
                f"their batch jobs ({first}); the answers received are cached and the same command "
                "resubmits the rest",
                "failing",
            )
        return dict(answers)

    def _prompt(self, node: Node) -> PromptVersion:
        """A node as a prompt version: its body with the start prompt's output preference, showing its
        references (their images and labels are part of the prompt's sha256, so of every cache key)."""
        preference = self.start.structured_output
        head = "" if preference is None else f"{{#-\nstructured_output: {str(preference).lower()}\n-#}}\n"
        prompt = PromptVersion(self.start.name, 0, head + node.body, source="proposal")
        return prompt.with_references(node.references) if node.references else prompt

    def _scores(self, outcomes: dict[str, Outcome]) -> dict[str, float]:
        span = self.task.grade.maximum - self.task.grade.minimum
        return {key: per_example_score(o, self.metric, span) for key, o in outcomes.items()}

    def _metrics(self, outcomes: dict[str, Outcome]) -> dict[str, Any]:
        """The split's usual metrics; with several task models pooled, their cost is not one price."""
        models = {spec.model for spec in self.task_specs}
        price = price_for(next(iter(models)), self.plan.prices) if len(models) == 1 else None
        return summarise(outcomes.values(), price, self.task)

    def _log(self, node: Node) -> None:
        if self.tracker is not None:
            self.tracker.log_node(node)

    async def _search(self) -> None:
        split = self.evaluated_on.split
        seed = Node("p0", self.start.body, None, 0, "start", references=self.start.references)
        self.nodes.append(seed)
        try:
            outcomes = await self._evaluate(seed, self.evaluated_on.examples, split)
        except SweepStopped as stop:
            self.stop_reason, self.stop_kind = f"stopped: {stop.message}", stop.kind
            return
        seed.scores, seed.metrics = self._scores(outcomes), self._metrics(outcomes)
        self._log(seed)
        self.say(
            f"{self.start.ref}: {self.metric} {seed.score:.1%} on {len(self.evaluated_on.examples)} {split} examples"
        )
        rng = random.Random(self.options.seed)
        sampler = Minibatches(self.train.examples, min(self.options.minibatch, len(self.train.examples)), rng)
        best = seed.score
        for round_number in range(1, self.options.max_rounds + 1):
            improved = False
            proposers = [self._propose] * self.options.candidates
            proposers += [self._change_references] * self.options.references
            for propose in proposers:
                try:
                    node = await propose(round_number, select_parent(self.pool, rng), sampler.next())
                except SweepStopped as stop:
                    self.stop_reason, self.stop_kind = f"stopped: {stop.message}", stop.kind
                    return
                if node is None:
                    continue
                if node.scores and node.score > best:
                    best, improved = node.score, True
                    node.status = "improved"
                self._log(node)
                self.say(_describe(node, self.metric))
            if not improved:
                self.stop_reason = f"round {round_number} found no improvement"
                return
        self.stop_reason = f"max rounds ({self.options.max_rounds}) reached"

    @property
    def pool(self) -> list[Node]:
        return [n for n in self.nodes if n.scores and n.status in ("start", "improved", "evaluated")]

    async def _propose(self, round_number: int, parent: Node, batch: list[Example]) -> Node | None:
        """A rewrite of the parent's template by the reflection model (its references kept)."""
        train = self.train.split
        batch = _unshown(batch, parent.references)
        parent_out = await self._evaluate(parent, batch, train)
        parent_scores = self._scores(parent_out)
        failures = [key for key, score in parent_scores.items() if score < 1.0]
        if not failures:
            self.say(f"{parent.id} is perfect on this minibatch: nothing to reflect on")
            return None
        node = self._child(
            parent, round_number, "", parent.references, "instruction rewritten by the reflection model"
        )
        images = {e.id: e.image for e in batch}
        shown = [
            reflection.Shown(o, images[o.example_id], reflection.wrong_on(o))
            for key, o in parent_out.items()
            if key in failures
        ]
        answer = await self._reflect(node, parent, shown, len(batch))
        node.reflection_answer = answer
        if node.reason is not None:  # the reflection call itself failed
            return node
        checked = check_proposal(
            answer,
            self._prompt(parent),
            self.task,
            structured_output=all(self.structured.values()),
            forbidden=self._forbidden - set(parent.reference_ids),  # a template may name what it shows
            seen={n.body: n.id for n in self.nodes if n.body and n.reference_ids == parent.reference_ids},
            max_chars=self.max_chars,
            max_rendered_chars=self.max_rendered_chars,
        )
        node.body = checked.body
        if not checked.ok:
            node.reason = checked.reason
            return node
        return await self._try(node, batch, parent_scores)

    async def _change_references(self, round_number: int, parent: Node, batch: list[Example]) -> Node | None:
        """The parent's template with another choice of training trays as references (``--references``)."""
        assert self.moves is not None
        train = self.train.split
        batch = _unshown(batch, parent.references)
        parent_out = await self._evaluate(parent, batch, train)
        if all(score >= 1.0 for score in self._scores(parent_out).values()):
            self.say(f"{parent.id} is perfect on this minibatch: no reference change to try")
            return None
        tried = {n.reference_ids for n in self.nodes if n.body == parent.body}
        missed = missed_categories(parent_out.values())
        change = self.moves.propose(parent.id, parent.references, tried, missed)
        if change is None:
            self.say(f"{parent.id}: every reference change from it was tried")
            return None
        node = self._child(parent, round_number, parent.body, change.references, change.change)
        batch = _unshown(batch, change.references)
        kept = {e.id for e in batch}
        parent_scores = self._scores({k: o for k, o in parent_out.items() if o.example_id in kept})
        if (size := len(self._prompt(node).render(self.task))) > self.max_rendered_chars:
            node.reason = f"renders too long: {size:,} characters (at most {self.max_rendered_chars:,})"
            return node
        return await self._try(node, batch, parent_scores)

    def _child(
        self, parent: Node, round_number: int, body: str, references: tuple[Reference, ...], change: str
    ) -> Node:
        """A new proposal in the population, rejected until it is shown to do better."""
        node = Node(f"p{len(self.nodes)}", body, parent.id, round_number, "rejected")
        node.references, node.change = references, change
        self.nodes.append(node)
        return node

    async def _try(self, node: Node, batch: list[Example], parent_scores: dict[str, float]) -> Node:
        """A checked proposal on the parent's minibatch, then — only if it does better there — on the
        whole optimisation split."""
        child_out = await self._evaluate(node, batch, self.train.split)
        before, after = sum(parent_scores.values()), sum(self._scores(child_out).values())
        node.minibatch = (before, after)
        if after <= before:
            node.status, node.reason = "not_better", f"minibatch {after:g} ≤ parent's {before:g}"
            return node
        outcomes = await self._evaluate(node, self.evaluated_on.examples, self.evaluated_on.split)
        node.scores, node.metrics = self._scores(outcomes), self._metrics(outcomes)
        node.status = "evaluated"
        return node

    async def _reflect(self, node: Node, parent: Node, shown: list[reflection.Shown], n: int) -> str | None:
        parent_prompt = self._prompt(parent)
        ref = self.start.ref if parent.id == "p0" else f"proposal {parent.id} (from {self.start.ref})"
        text = reflection.render_reflection(
            self.reflect_prompt,
            self.task,
            parent=parent_prompt,
            parent_ref=ref,
            shown=shown,
            n_minibatch=n,
            answer_format=answer_format(parent_prompt.render(self.task), self.task),
            metric=self.metric,
            proposal_id=node.id,
        )
        node.reflection_prompt = text
        sheet = reflection.contact_sheet([s.image for s in shown])
        spec = self.reflection
        candidate = Candidate(self.reflect_prompt, spec, spec.settings, text)
        request = build_request(text, self.task, spec.settings, sheet)
        caller = Caller(self.plan, self.cache, self.budget)
        tokens = caller.input_tokens(candidate, request)
        completion, _ = await caller.complete(
            candidate, (self.providers or {})[(spec.provider, spec.model)], request, tokens
        )
        if completion.error is not None and not completion.text:
            node.reason = f"reflection failed: {completion.error.kind.value}: {completion.error.message}"
        return completion.text

    @property
    def _references_from(self) -> str | None:
        """Where the written versions' references came from: drawn from the training split (by the
        search, or by the start's rule), or the start version's own files."""
        if self.moves is not None or isinstance(self.start.reference_spec, dict):
            return self.train.split
        return self.start.ref if self.start.references else None

    @property
    def _forbidden(self) -> set[str]:
        """Example ids: a template naming one is answering for that tray, not for trays in general."""
        return {e.id for e in self.train.examples} | {e.id for e in self.evaluated_on.examples}

    # -- output ----------------------------------------------------------------------------------
    def write_best(self, run_id: str | None) -> list[tuple[Node, Path]]:
        """The proposals worth a review (``pool.worth_writing``) as new unreleased versions."""
        if not self.nodes or not self.nodes[0].scores:
            return []
        chosen = worth_writing(self.pool, self.nodes[0], self.options.candidates)
        provenance = Provenance(
            metric=self.metric,
            optimized_on=self.evaluated_on.split,
            reflected_on=self.train.split,
            n_optimized_on=len(self.evaluated_on.examples),
            run_id=run_id,
            references_from=self._references_from,
        )
        return write_versions(chosen, self.nodes, self.start, self.library, provenance)


class _BatchSayer:
    """A line when a job is first seen and when it ends: an optimisation's batch waits are told, not
    drawn (the search prints one line per step)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.seen: dict[str, bool] = {}  # local id → ended

    def batches_update(self, jobs: list[tuple[JobRecord, JobStatus]], elapsed_s: float) -> None:
        for job, status in jobs:
            if job.local_id not in self.seen:
                self.seen[job.local_id] = False
                self.say(f"batch: waiting for {job.name} ({job.requests} requests of {job.candidate_label})")
            if status.done and not self.seen[job.local_id]:
                self.seen[job.local_id] = True
                state = status.state.removeprefix("JOB_STATE_").lower()
                self.say(f"batch: {job.name} {state} after {elapsed_s:.0f} s")


def _unshown(batch: list[Example], references: tuple[Reference, ...]) -> list[Example]:
    """The minibatch without the trays the prompt shows as references: a tray shown with its answer
    is not a tray the prompt is measured on."""
    if not references:
        return batch
    shown = {r.id for r in references} | {r.image.sha256 for r in references}
    return [e for e in batch if e.id not in shown and e.image.sha256 not in shown]


def _sizes(references: tuple[Reference, ...]) -> tuple[tuple[int, int], ...]:
    return tuple(size_of(r.image) for r in references)


class OptimizationInterrupted(PromptgradeError):
    """Ctrl-C: what was found is written and logged; the report says what."""

    exit_code = 130

    def __init__(self, report: Report) -> None:
        self.report = report
        super().__init__(f"interrupted: {len(report.written)} proposal(s) written")


def _describe(node: Node, metric: str) -> str:
    head = f"round {node.round} · {node.id} from {node.parent}"
    if node.status == "rejected":
        return f"{head}: rejected — {node.reason}"
    if node.status == "not_better":
        return f"{head}: not better on the minibatch ({node.reason})"
    mark = " — new best" if node.status == "improved" else ""
    return f"{head}: {metric} {node.score:.1%}{mark}"


__all__ = [
    "Bound",
    "BudgetTooSmall",
    "Node",
    "Optimization",
    "OptimizationInterrupted",
    "Options",
    "Report",
]
