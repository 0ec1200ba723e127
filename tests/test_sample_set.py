"""The committed synthetic sample set is usable as-is, and its generator is reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from promptgrade.data import FolderDatasetConfig, load_dataset_split
from promptgrade.task import Task, load_task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
GENERATOR = REPO / "scripts" / "make_sample_set.py"


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task(REPO / "experiments" / "tasks" / "meal_tray.yaml")


def test_sample_set_loads_with_the_real_task(task: Task) -> None:
    config = FolderDatasetConfig(kind="folder", path=Path("../data/sample"))
    splits = {
        name: load_dataset_split(config, task, REPO / "experiments", name)
        for name in ("train", "validation", "test")
    }

    assert all(len(split) > 0 for split in splits.values()), {k: len(v) for k, v in splits.items()}
    assert all(not split.skipped for split in splits.values())
    examples = [e for split in splits.values() for e in split.examples]
    assert len(examples) >= 200
    assert len({e.id for e in examples}) == len(examples)
    used = {c for e in examples for c in e.labels.categories}
    assert len(used) >= 8
    for split in splits.values():  # stratified: every split sees every primary category
        assert {e.labels.categories[0] for e in split.examples} == {e.labels.categories[0] for e in examples}
    assert all(e.labels.grade is not None and e.labels.grade % 5 == 0 for e in examples)


def test_sample_set_is_small_and_documented() -> None:
    files = [p for p in SAMPLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 1024 * 1024
    assert len(list((SAMPLE / "images").glob("*.jpg"))) >= 200
    readme = (SAMPLE / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in readme.lower() and "scripts/make_sample_set.py" in readme


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generator_is_deterministic(tmp_path: Path) -> None:
    outputs = [tmp_path / "one", tmp_path / "two"]
    for out in outputs:  # separate processes: nothing may depend on in-process state
        subprocess.run(
            [sys.executable, str(GENERATOR), "--out", str(out), "--count", "20"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    first, second = (tree_digest(out) for out in outputs)
    assert len([name for name in first if name.endswith(".jpg")]) == 20
    assert first == second
