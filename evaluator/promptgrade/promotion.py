"""Promotion: pick the best eligible candidate, prove it beats production, alias it, write the bundle.

"Best" in a table of point estimates is not enough to replace what runs in production: the challenger
must be *measurably* better on the same examples (a paired test at a chosen level), and must have
been measured on enough examples with few enough failures to trust the figure at all.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptgrade.bundle import Manifest, PromptInfo, Provenance, write_bundle
from promptgrade.errors import PromptgradeError
from promptgrade.providers.base import GenerationSettings
from promptgrade.providers.registry import PROVIDERS
from promptgrade.stats import PairedTest, holm, mcnemar, wilcoxon_errors
from promptgrade.task import Task
from promptgrade.tracking.read import RunRow, RunStore, ranked

SHOWN_METRICS = (
    "category_accuracy",
    "category_top1_accuracy",
    "grade_accuracy",
    "grade_mae",
    "parse_failure_rate",
)


def cost_per_image(row: RunRow) -> tuple[float, int]:
    """What the Lambda will pay per tray, as measured, and the k calls that make it up.

    The run's cost over its evaluated trays: each tray's tokens are already its k samples' sum, so a
    ``samples: 3`` candidate costs three calls per tray here as in production, not one (NaN: no price).
    """
    cost, n = row.metric("cost_usd"), row.metric("n_examples")
    samples = int(row.params.get("samples") or 1)  # a run of k = 1 does not record it
    return (cost / n if n > 0 else math.nan), samples


class PromotionError(PromptgradeError):
    """No eligible run, or the challenger is not measurably better (without --force)."""


@dataclass(frozen=True)
class Policy:
    metric: str | None = None  # default: the sweep's primary metric
    alpha: float = 0.05
    min_examples: int = 30
    max_failure_rate: float = 0.2  # parse failures + errors
    force: bool = False


@dataclass(frozen=True)
class Challenger:
    """One eligible challenger's test against the incumbent on the promotion metric, Holm-adjusted."""

    run: RunRow
    test: PairedTest
    adjusted_p: float


@dataclass
class Decision:
    winner: RunRow
    metric: str
    runner_up: RunRow | None = None
    incumbent: RunRow | None = None
    tests: list[PairedTest] = field(default_factory=list)
    gating_test: PairedTest | None = None
    challengers: list[Challenger] = field(default_factory=list)  # the Holm family; the winner first
    ineligible: dict[str, str] = field(default_factory=dict)  # run id → why not
    forced: bool = False
    bundle_dir: Path | None = None
    registry_uri: str | None = None


def optimized_on_evaluation(row: RunRow) -> str | None:
    """A version ``promptgrade optimize`` fitted to the split it was measured on: its figure is not a
    measurement but a training score, so no ``--force`` makes it promotable."""
    fitted = [s for s in row.params.get("optimized_on", "").split(",") if s]
    split = row.params.get("split")
    if split and split in fitted:
        return (
            f"its prompt was optimised on {split!r}, the split it was measured on: sweep it on another split"
        )
    return None


def ineligibility(row: RunRow, policy: Policy) -> str | None:
    if row.params.get("provider") in (None, "baseline") or "prompt_sha256" not in row.params:
        return "not a prompt candidate"
    if (leak := optimized_on_evaluation(row)) is not None:
        return leak
    if row.params.get("provider") not in PROVIDERS:  # the Lambda runs every provider a sweep can
        return f"provider {row.params['provider']} cannot be shipped in the Lambda yet (it runs {', '.join(PROVIDERS)})"
    if row.status != "FINISHED" or row.tags.get("promptgrade.partial") == "true":
        return f"run is {row.status.lower()} / partial"
    n = row.metric("n_examples")
    if math.isnan(n) or n < policy.min_examples:
        return f"only {0 if math.isnan(n) else int(n)} examples (minimum {policy.min_examples})"
    failures = row.metric("parse_failure_rate") + row.metric("error_rate")
    if not math.isnan(failures) and failures > policy.max_failure_rate:
        return f"{failures:.0%} parse failures + errors (maximum {policy.max_failure_rate:.0%})"
    return None


def _paired(
    store: RunStore, incumbent: RunRow, challenger: RunRow, metric: str
) -> tuple[list[PairedTest], PairedTest]:
    before, after = store.predictions(incumbent.run_id), store.predictions(challenger.run_id)
    ids = sorted(set(before) & set(after))
    ids = [i for i in ids if before[i]["status"] != "skipped" and after[i]["status"] != "skipped"]
    if not ids:
        raise PromotionError("the two runs share no evaluated examples: they cannot be compared")
    graded = [
        i for i in ids if before[i]["grade_abs_error"] is not None and after[i]["grade_abs_error"] is not None
    ]

    def paired(column: str, rows: list[str]) -> PairedTest:
        return mcnemar([bool(before[i][column]) for i in rows], [bool(after[i][column]) for i in rows])

    named = {
        "category_accuracy": paired("category_correct", ids),
        "category_top1_accuracy": paired("category_top1_correct", ids),
        "grade_accuracy": paired("grade_correct", graded),
        "grade_mae": wilcoxon_errors(
            [float(before[i]["grade_abs_error"]) for i in graded],
            [float(after[i]["grade_abs_error"]) for i in graded],
        ),
    }
    tests = [
        PairedTest(f"{t.name} — {name}", t.n, t.p_value, t.challenger_better, t.detail)
        for name, t in named.items()
    ]
    gating = next((t for t in tests if t.name.endswith(f"— {metric}")), None)
    if gating is None:
        raise PromotionError(
            f"promotion tests example by example on {', '.join(named)}; {metric} has no paired test"
        )
    return tests, gating


def holm_family(
    store: RunStore, incumbent: RunRow, winner: RunRow, gate: PairedTest, rivals: list[RunRow], metric: str
) -> list[Challenger]:
    """The winner and every other eligible challenger, each tested against the incumbent, adjusted together.

    The winner is the best of the sweep: the family is every candidate it was picked from, not only
    the one that came out on top, or a sweep of twelve would beat production by luck alone.
    """
    key = incumbent.tags.get("candidate_key")  # production's re-run in this sweep is no challenger
    others = [
        r
        for r in rivals
        if r.run_id not in (winner.run_id, incumbent.run_id)
        and (key is None or r.tags.get("candidate_key") != key)
    ]
    tests = [gate, *(_paired(store, incumbent, row, metric)[1] for row in others)]
    adjusted = holm([t.p_value for t in tests])
    return [Challenger(row, t, p) for row, t, p in zip([winner, *others], tests, adjusted, strict=True)]


def _comparable_incumbent(store: RunStore, production: RunRow, winner: RunRow) -> RunRow | None:
    """The production candidate measured on the winner's examples: the same run, or its re-run in this sweep."""
    same_data = production.params.get("dataset_sha256") == winner.params.get("dataset_sha256")
    if same_data and production.params.get("split") == winner.params.get("split"):
        return production
    key = production.tags.get("candidate_key")
    for row in store.candidates(winner.sweep_run_id):
        if row.tags.get("candidate_key") == key:
            return row
    return None


def decide(store: RunStore, policy: Policy, run_id: str | None = None) -> Decision:
    sweep = store.latest_sweep() if run_id is None else None
    metric = policy.metric or store.primary_metric(sweep or store.run(run_id).sweep_run_id or "")
    if run_id is not None:
        winner = store.run(run_id)
        if (leak := optimized_on_evaluation(winner)) is not None:
            raise PromotionError(f"run {run_id} cannot be promoted: {leak}")
        reason = ineligibility(winner, policy)
        if reason and not policy.force:
            raise PromotionError(f"run {run_id} is not eligible: {reason} (use --force to override)")
        peers = store.candidates(winner.sweep_run_id)
    else:
        peers = store.candidates(sweep)
    eligible = [r for r in ranked(peers, metric) if ineligibility(r, policy) is None]
    ineligible = {r.run_id: reason for r in peers if (reason := ineligibility(r, policy))}
    if run_id is None:
        if not eligible:
            details = (
                "; ".join(f"{store.run(rid).name}: {why}" for rid, why in ineligible.items()) or "none ran"
            )
            raise PromotionError(f"no eligible candidate in the latest sweep of {store.name!r} ({details})")
        winner = eligible[0]
    decision = Decision(winner=winner, metric=metric, ineligible=ineligible)
    others = [r for r in eligible if r.run_id != winner.run_id]
    decision.runner_up = others[0] if others else None

    production_id = store.production_run_id()
    if production_id and production_id != winner.run_id:
        production = store.run(production_id)
        if production.params.get("prompt_sha256") == winner.params.get("prompt_sha256") and all(
            production.params.get(k) == winner.params.get(k) for k in ("model", "provider")
        ):
            decision.incumbent = production
        else:
            comparable = _comparable_incumbent(store, production, winner)
            if comparable is None:
                if not policy.force:
                    raise PromotionError(
                        f"production ({production.name}) was not measured on this sweep's examples, so the "
                        "challenger cannot be tested against it: add it to the experiment and sweep again, or --force"
                    )
                decision.forced = True
            else:
                decision.incumbent = comparable
                decision.tests, decision.gating_test = _paired(store, comparable, winner, metric)
                gate = decision.gating_test
                decision.challengers = holm_family(store, comparable, winner, gate, eligible, metric)
                better = gate.challenger_better and decision.challengers[0].adjusted_p < policy.alpha
                if not better:
                    if not policy.force:
                        raise PromotionRefused(decision, policy)
                    decision.forced = True
    elif decision.runner_up is not None:
        decision.tests, _ = _paired(store, decision.runner_up, winner, metric)
    return decision


class PromotionRefused(PromotionError):
    def __init__(self, decision: Decision, policy: Policy) -> None:
        self.decision = decision
        gate = decision.gating_test
        assert gate is not None
        family = decision.challengers
        adjusted = ""
        if len(family) > 1:
            adjusted = f", Holm-adjusted over {len(family)} challengers p={family[0].adjusted_p:.3g}"
        super().__init__(
            f"{decision.winner.name} is not measurably better than production ({decision.incumbent.name if decision.incumbent else '?'}) "
            f"on {decision.metric}: {gate.name} p={gate.p_value:.3g}{adjusted} (needs < {policy.alpha}), {gate.detail}. "
            "Use --force to promote anyway."
        )


def promote(store: RunStore, decision: Decision, bundle_dir: Path, policy: Policy) -> Decision:
    """Alias the winner's prompt version as ``production``, tag the run, and write the Lambda bundle
    (with the reference images the run sent, read from its artifacts: the registry holds only text)."""
    winner = decision.winner
    record = store.json_artifact(winner.run_id, "candidate.json")
    uri = winner.tags.get("registry_prompt_uri", "")
    name, _, registry_version = uri.removeprefix("prompts:/").partition("/")
    if not name or not registry_version:
        raise PromotionError(f"run {winner.run_id} has no registered prompt (tag registry_prompt_uri)")
    references = store.references(winner.run_id) if record.get("references") else ()
    prompt = store.registry.load(name, registry_version, references)
    if prompt.sha256 != record["prompt"]["sha256"]:
        raise PromotionError(f"registry prompt {uri} does not match the text run {winner.run_id} measured")
    task = Task.model_validate(record["task"])
    metrics = {k: v for k, v in winner.metrics.items() if not math.isnan(v)}
    promoted_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=int(record["prompt"]["version"]), sha256=prompt.sha256),
        provider=record["provider"],
        model=record["model"],
        region=(record.get("endpoint") or {}).get("region"),
        base_url=(record.get("endpoint") or {}).get("base_url"),
        settings=GenerationSettings.model_validate(record["settings"]),
        task=task,
        image_max_side=int(record.get("image_max_side", 1024)),
        samples=int(record.get("samples") or 1),  # a run recorded before samples: one answer per tray
        abstain_below=record.get("abstain_below"),
        provenance=Provenance(
            run_id=winner.run_id,
            experiment=store.name,
            metrics=metrics,
            promoted_at=promoted_at,
            dataset=winner.params.get("dataset"),
            dataset_sha256=winner.params.get("dataset_sha256"),
            tracking_uri=store.uri,
        ),
    )
    prompt = dataclasses.replace(prompt, version=int(record["prompt"]["version"]), source=uri)
    write_bundle(bundle_dir, prompt, manifest)

    previous = store.production_run_id()
    if previous and previous != winner.run_id:
        old_name = store.run(previous).params.get("prompt_name")
        if old_name and old_name != name:
            store.registry.clear_production(old_name)
    store.registry.set_production(name, registry_version)
    store.set_production_run(winner.run_id)
    store.mark_promoted(winner.run_id, promoted_at, promotion_record(decision, policy, promoted_at))
    decision.bundle_dir = bundle_dir
    decision.registry_uri = uri
    return decision


def promotion_record(decision: Decision, policy: Policy, promoted_at: str) -> dict[str, Any]:
    return {
        "promoted_at": promoted_at,
        "metric": decision.metric,
        "alpha": policy.alpha,
        "forced": decision.forced,
        "incumbent_run_id": decision.incumbent.run_id if decision.incumbent else None,
        "runner_up_run_id": decision.runner_up.run_id if decision.runner_up else None,
        "tests": [
            {
                "name": t.name,
                "n": t.n,
                "p_value": t.p_value,
                "challenger_better": t.challenger_better,
                "detail": t.detail,
            }
            for t in decision.tests
        ],
        "multiple_comparisons": holm_record(decision),
    }


def holm_record(decision: Decision) -> dict[str, Any] | None:
    """What the decision's p-value was corrected for: None when no challenger was tested against production."""
    if not decision.challengers:
        return None
    return {
        "method": "holm",
        "metric": decision.metric,
        "family_size": len(decision.challengers),
        "challengers": [
            {
                "run_id": c.run.run_id,
                "name": c.run.name,
                "p_value": c.test.p_value,
                "adjusted_p_value": c.adjusted_p,
                "challenger_better": c.test.challenger_better,
                "detail": c.test.detail,
            }
            for c in decision.challengers
        ],
    }


__all__ = ["Decision", "Policy", "PromotionError", "PromotionRefused", "decide", "promote"]
