"""Given a finished sweep, when I name a run the way the tables print it — 8 characters of its id, any
unique prefix of 6 or more, name@version, or baseline:<kind> — then every command that takes a run
finds it; a prefix that is too short, unknown or shared is one line naming the problem."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers.scripted_sweeps import planted_answers, write_experiment
from helpers.sweeps import candidate_runs, module_lab
from promptgrade.cli import app
from promptgrade.errors import TrackingError
from promptgrade.tracking import refs
from promptgrade.tracking.read import RunRow

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 12


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[dict[str, Any]]:
    """One sweep the tests only read (and promote from): two prompts and the classical baseline; JSON right
    on 8 trays, free text on the last 8."""
    with module_lab(tmp_path_factory, _migrated_mlflow_db, "refs") as lab:
        path, server, tracking = lab.folder / "exp.yaml", lab.server, lab.tracking
        examples = write_experiment(
            path, name="refs", base_url=server.base_url, n=N, extra="baselines:\n  - kind: classical\n"
        )
        server.default_answer = planted_answers(
            examples, {e.id for e in examples[:8]}, {e.id for e in examples[4:]}
        )
        result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
        assert result.exit_code == 0, result.output
    runs = {r.info.run_name.split(" · ")[0]: r.info.run_id for r in candidate_runs(tracking, "refs")}
    assert set(runs) == {"meal_tray_freetext@v1", "meal_tray_json@v1", "baseline"}
    compared = RUNNER.invoke(app, ["compare", str(path), "--tracking-uri", tracking])
    assert compared.exit_code == 0, compared.output
    printed = re.findall(r"\b[0-9a-f]{8}\b", compared.output)
    assert sorted(printed) == sorted(run_id[:8] for run_id in runs.values())  # what the table shows
    yield {"path": str(path), "runs": runs, "tracking": tracking}


def run(swept: dict[str, Any], *args: str) -> Any:
    return RUNNER.invoke(app, [*args, "--tracking-uri", swept["tracking"]])


def test_compare_takes_the_printed_ids_shorter_prefixes_and_the_baseline(
    swept: dict[str, Any], tmp_path: Path
) -> None:
    runs, out = swept["runs"], tmp_path / "flips.json"
    eight, six = runs["meal_tray_json@v1"][:8], runs["meal_tray_freetext@v1"][:6].upper()
    result = run(swept, "compare", swept["path"], "--runs", eight, six, "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert (data["a"], data["b"]) == (runs["meal_tray_json@v1"], runs["meal_tray_freetext@v1"])

    result = run(swept, "compare", swept["path"], "--runs", "meal_tray_json@1", "baseline:classical")
    assert result.exit_code == 0, result.output
    assert f"(run {runs['baseline'][:8]})" in result.output


def test_label_export_promote_and_report_take_prefixes(swept: dict[str, Any], tmp_path: Path) -> None:
    runs = swept["runs"]
    exported = run(
        swept,
        *("label", "export", swept["path"], "--run", runs["meal_tray_freetext@v1"][:8]),
        *("--out", str(tmp_path / "tasks.json"), "--config", str(tmp_path / "config.xml")),
    )
    assert exported.exit_code == 0, exported.output
    assert "pre-annotations: 12 from meal_tray_freetext@v1" in exported.output

    promoted = run(
        swept,
        *("promote", "-e", swept["path"], "--run", runs["meal_tray_freetext@v1"][:7]),
        *("--min-examples", "10", "--bundle-dir", str(tmp_path / "bundle")),
    )
    assert promoted.exit_code == 0, promoted.output
    assert "promoted meal_tray_freetext@v1" in promoted.output

    sweep_id = candidate_runs(swept["tracking"], "refs")[0].data.tags["mlflow.parentRunId"]
    report = tmp_path / "report.html"
    reported = run(swept, "report", swept["path"], "--sweep", sweep_id[:8], "--out", str(report))
    assert reported.exit_code == 0, reported.output
    assert sweep_id in report.read_text()


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("abc12", "too short: give at least 6 characters"),
        ("ffffff0", "no candidate run whose id starts with 'ffffff0'"),
        (
            "baseline:cnn",
            "no baseline 'cnn' in the latest sweep of 'refs' (its baselines: baseline:classical)",
        ),
    ],
)
def test_a_bad_reference_is_one_line(swept: dict[str, Any], ref: str, message: str) -> None:
    result = run(swept, "compare", swept["path"], "--runs", ref, "meal_tray_json@1")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


class Store:
    """What ``refs`` asks of a RunStore, over runs whose ids a test chooses (MLflow draws them at random)."""

    name = "planted"

    def __init__(self, *run_ids: str) -> None:
        self.rows = [RunRow(i, f"candidate {n}", "sweep", {}, {}, {"promptgrade.kind": "candidate"}, "FINISHED")
                     for n, i in enumerate(run_ids)]  # fmt: skip

    def runs_starting(self, prefix: str, kind: str) -> list[RunRow]:
        return [r for r in self.rows if r.run_id.startswith(prefix)]


def test_a_prefix_two_runs_share_lists_them_and_a_longer_one_decides() -> None:
    store = Store("abcdef01" + "0" * 24, "abcdef02" + "0" * 24)
    with pytest.raises(
        TrackingError, match=r"'abcdef' matches 2 runs: abcdef010000 \(candidate 0\), abcdef020000"
    ):
        refs.run_id(store, "abcdef", kind="candidate")  # type: ignore[arg-type]
    assert refs.run_id(store, "abcdef02", kind="candidate") == "abcdef02" + "0" * 24  # type: ignore[arg-type]
    full = "f" * 32
    assert refs.run_id(store, full, kind="candidate") == full  # type: ignore[arg-type]  # taken as it is
