"""Given an answers file that scripts each image per prompt, when the real client asks the local Gemini
stand-in with one prompt's text or another's, then each prompt gets its own answer; a file that is
missing or malformed stops ``fake-gemini`` with one line and exit 2, before anything is served."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import ROOT
from promptgrade.cli import app
from promptgrade.providers.base import CompletionRequest, ImageInput
from promptgrade.providers.gemini import GeminiProvider
from promptgrade.testing.answer_files import load_answers
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "400"})
TRAY = ImageInput(b"\xff\xd8\xff a tray", "image/jpeg")
OTHER = ImageInput(b"\xff\xd8\xff another tray", "image/jpeg")


def ask(server: FakeGemini, prompt: str, image: ImageInput) -> str | None:
    provider = GeminiProvider("gemini-2.5-flash", base_url=server.base_url)
    return asyncio.run(provider.complete(CompletionRequest(prompt=prompt, image=image))).text


def test_each_prompt_gets_its_own_answer_and_an_unscripted_image_the_default(
    tmp_path: Path, fake_api_key: str
) -> None:
    path = tmp_path / "answers.json"
    path.write_text(
        json.dumps(
            {
                "prompts": {"terse": "Answer in one line", "json": "Return a JSON object"},
                "answers": {
                    TRAY.sha256: {"terse": "Category: soup\nFood %: 40%", "json": '{"categories": ["stew"]}'}
                },
            }
        ),
        encoding="utf-8",
    )
    noticed: list[str] = []
    scripted = load_answers(path, default="DEFAULT")
    scripted.on_unscripted = noticed.append
    with FakeGemini(default_answer=scripted) as server:
        assert ask(server, "Look at the tray. Answer in one line.", TRAY) == "Category: soup\nFood %: 40%"
        assert ask(server, "Look at the tray. Return a JSON object.", TRAY) == '{"categories": ["stew"]}'
        assert ask(server, "A prompt the file does not know", TRAY) == "DEFAULT"
        assert ask(server, "Answer in one line.", OTHER) == "DEFAULT"
        assert ask(server, "Answer in one line.", OTHER) == "DEFAULT"
    assert noticed == [OTHER.sha256]  # said once, not per request


def test_the_plain_shape_answers_every_prompt_alike(tmp_path: Path) -> None:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({TRAY.sha256: "Category: soup\nFood %: 40%"}), encoding="utf-8")
    scripted = load_answers(path, default="DEFAULT")
    assert len(scripted) == 1 and scripted.prompts == {}
    assert scripted.answers[TRAY.sha256] == "Category: soup\nFood %: 40%"


def test_the_demo_file_scripts_every_prompt_of_the_walkthrough() -> None:
    scripted = load_answers(ROOT / "data" / "demo_answers.json", default="")
    assert len(scripted) == 64
    for name in ("meal_tray_freetext", "meal_tray_json", "meal_tray_anchors"):
        text = (ROOT / "prompts" / name / "v1.jinja").read_text(encoding="utf-8")
        assert scripted.prompt_of(text) == name  # its phrase is in its template, and no other's first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "answers.json: answers file not found"),
        ('{"a": ', "answers.json:1: not JSON"),
        ("[1, 2]", "answers.json: expected"),
        ('{"abc": 3}', "answers.json: the answer for image 'abc' is not a string"),
        (
            '{"prompts": {"p": "phrase"}, "answers": {"abc": {"q": "x"}}}',
            "answers prompt 'q', which \"prompts\" does not name",
        ),
    ],
)
def test_a_bad_answers_file_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if content is not None:
        Path("answers.json").write_text(content, encoding="utf-8")
    result = RUNNER.invoke(app, ["fake-gemini", "--port", "0", "--answers", "answers.json"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, result.output
