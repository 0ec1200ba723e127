"""Given a finished sweep whose answers are scripted (each prompt right on known trays, one answer
unreadable), when I write the HTML report and open it in a real browser from disk, then it shows
the candidates, the plots and every example, and its filters leave exactly the disagreements or
the failures — with nothing fetched from the network.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers.scripted_sweeps import planted_answers, write_experiment
from helpers.sweeps import module_lab
from promptgrade.cli import app
from promptgrade.data.examples import Example

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 12
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[dict[str, Any]]:
    """One sweep for the module: JSON right on the first 8 trays, free text on the last 8, and the free
    text answer to the first tray unreadable — so 8 disagreements and 1 failure."""
    with module_lab(tmp_path_factory, _migrated_mlflow_db, "report") as lab:
        tmp, server, tracking = lab.folder, lab.server, lab.tracking
        lab.env.setenv("PROMPTGRADE_PLOTS", "1")  # the report shows them
        path = tmp / "exp.yaml"
        examples = write_experiment(path, name="reported", base_url=server.base_url, n=N)
        json_right = {e.id for e in examples[:8]}
        text_right = {e.id for e in examples[4:]}
        unreadable = examples[0].id

        def refuse(example: Example, is_json: bool) -> str | None:
            return "Sorry, I can't help with that." if not is_json and example.id == unreadable else None

        server.default_answer = planted_answers(examples, json_right, text_right, refuse)
        result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
        assert result.exit_code == 0, result.output
        out = tmp / "out" / "report.html"
        result = RUNNER.invoke(app, ["report", str(path), "--out", str(out), "--tracking-uri", tracking])
        assert result.exit_code == 0, result.output
        yield {
            "out": out,
            "output": result.output,
            "tracking": tracking,
            "ids": [e.id for e in examples],
            "disagree": json_right ^ text_right,
            "agree": json_right & text_right,
            "unreadable": unreadable,
            "tmp": tmp,
        }


def test_report_is_written_and_self_contained(swept: dict[str, Any]) -> None:
    html = swept["out"].read_text(encoding="utf-8")
    assert "report written to" in swept["output"]
    # written atomically: nothing but the report is left beside it (no temporary or partial file)
    assert sorted(p.name for p in swept["out"].parent.iterdir()) == ["report.html"]
    for example_id in swept["ids"]:
        assert f'id="example-{example_id}"' in html
    # nothing to fetch: every image is inline, there is no external script, style or font
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 2 * 4 + 1  # 4 plots per candidate + the sweep's
    assert html.count('src="data:image/jpeg;base64,') == N  # a thumbnail per example


def test_the_report_of_an_experiment_name_has_no_images_and_says_why(swept: dict[str, Any]) -> None:
    out = swept["tmp"] / "by-name.html"
    result = RUNNER.invoke(
        app, ["report", "reported", "--out", str(out), "--tracking-uri", swept["tracking"]]
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert "no experiment file given" in html
    assert "data:image/jpeg" not in html


def test_an_experiment_without_sweeps_is_one_clear_line(tmp_path: Path, tracking: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking).create_experiment("empty")
    result = RUNNER.invoke(
        app, ["report", "empty", "--out", str(tmp_path / "r.html"), "--tracking-uri", tracking]
    )
    assert result.exit_code != 0
    assert "has no sweeps yet" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("PROMPTGRADE_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)",
)
def test_the_report_renders_and_filters_in_chromium(swept: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "PROMPTGRADE_REQUIRE_BROWSER is set but chromium is not installed"
    fetched: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: (fetched.append(route.request.url), route.continue_()))
            page.goto(swept["out"].as_uri())

            def visible_ids() -> set[str]:
                return set(
                    page.eval_on_selector_all(
                        "tr.example:not([hidden])", "rows => rows.map(r => r.dataset.example)"
                    )
                )

            assert page.locator("tr.candidate").count() == 2
            assert visible_ids() == set(swept["ids"])
            # the thumbnails and plots decode: a broken data URL would have a natural width of 0
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == N + 9 and min(widths) > 0

            page.check("#only-disagreements")
            shown = visible_ids()
            assert shown == swept["disagree"]
            assert page.text_content("#shown") == str(len(swept["disagree"]))
            flipped = sorted(swept["disagree"])[0]
            assert page.locator(f"#example-{flipped}").is_visible()
            assert not page.locator(f"#example-{sorted(swept['agree'])[0]}").is_visible()

            page.uncheck("#only-disagreements")
            page.check("#only-failures")
            assert visible_ids() == {swept["unreadable"]}
            failed = page.locator(f"#example-{swept['unreadable']} td.fail")
            assert failed.count() == 1  # the free-text candidate's cell, with its error kind and raw answer
            assert "Sorry, I can't help with that." in (failed.text_content() or "")
        finally:
            browser.close()
    assert all(url.startswith("file://") for url in fetched), fetched
