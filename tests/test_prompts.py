"""Prompt templates: versioned, sandboxed, strict, and immutable once released."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptgrade.errors import PromptChangedError, PromptError
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.task import GradeScale, Task, load_task

ROOT = Path(__file__).resolve().parents[1]
TASK = Task(name="t", categories=("soup", "stew", "salad"), grade=GradeScale(name="food_remaining_pct"))


def write(root: Path, name: str, version: int, text: str) -> Path:
    path = root / name / f"v{version}.jinja"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_prompts_render_for_the_flagship_task() -> None:
    task = load_task(ROOT / "experiments/tasks/meal_tray.yaml")
    library = PromptLibrary(ROOT / "prompts")
    prompts = library.all()
    assert {p.name for p in prompts} >= {"meal_tray_freetext", "meal_tray_json", "meal_tray_anchors"}
    for prompt in prompts:
        rendered = prompt.validate(task)
        assert prompt.description, f"{prompt.ref} has no description"
        assert "{{" not in rendered and "{#" not in rendered
        assert all(category in rendered for category in task.categories), prompt.ref
    assert library.get("meal_tray_json", 1).structured_output is True
    assert library.get("meal_tray_freetext", 1).structured_output is False


def test_shipped_released_prompts_match_the_lock() -> None:
    library = PromptLibrary(ROOT / "prompts")
    released = library.released()
    assert released, "the shipped prompt versions should be released"
    for name, versions in released.items():
        for version in versions:
            library.get(name, int(version))  # raises PromptChangedError if edited


def test_front_matter_is_not_part_of_the_rendered_prompt(tmp_path: Path) -> None:
    write(tmp_path, "p", 1, "{#-\ndescription: short\n-#}\nPick from {{ categories | join(', ') }}.")
    prompt = PromptLibrary(tmp_path).get("p", 1)
    assert prompt.description == "short"
    assert prompt.render(TASK) == "Pick from soup, stew, salad.\n"


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p", 1, "{#-\ndescription: d\n-#}\nline one\n{{ dishes }}\n")
    with pytest.raises(PromptError) as info:
        PromptLibrary(tmp_path).get("p", 1).render(TASK)
    message = str(info.value)
    assert message.startswith(f"{path}:5:")
    assert "dishes" in message and "categories" in message  # says what is available


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p", 1, "{#-\ndescription: d\n-#}\n{% for c in categories %}\n{{ c }}\n")
    with pytest.raises(PromptError, match="syntax error") as info:
        PromptLibrary(tmp_path).get("p", 1).validate(TASK)
    assert str(info.value).startswith(f"{path}:")


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    write(tmp_path, "p", 1, "{{ task.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(PromptError):
        PromptLibrary(tmp_path).get("p", 1).render(TASK)


def test_released_version_cannot_change(tmp_path: Path) -> None:
    path = write(tmp_path, "p", 1, "Pick one of {{ categories }}.")
    library = PromptLibrary(tmp_path)
    assert library.release(library.get("p", 1)) is True
    assert library.release(library.get("p", 1)) is False
    path.write_text("Pick ONE of {{ categories }}.", encoding="utf-8")
    with pytest.raises(PromptChangedError, match=r"add|v2\.jinja") as info:
        library.get("p", 1)
    assert "immutable" in str(info.value) and "v2.jinja" in str(info.value)
    write(tmp_path, "p", 2, "Pick ONE of {{ categories }}.")
    assert library.get("p", 2).version == 2  # the edit lives on as a new draft version


def test_missing_prompt_and_version_are_named(tmp_path: Path) -> None:
    write(tmp_path, "p", 1, "x")
    library = PromptLibrary(tmp_path)
    with pytest.raises(PromptError, match=r"no prompt named 'q' \(known: p\)"):
        library.versions("q")
    with pytest.raises(PromptError, match=r"no version v3 \(available: v1\)"):
        library.get("p", 3)


def test_sha256_is_of_the_exact_text() -> None:
    a = PromptVersion("p", 1, "hello")
    assert a.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert PromptVersion("p", 1, "hello ").sha256 != a.sha256
