"""Given a dataset with every kind of problem, `validate-data` names each one, and what to do, at once.

The broken set below has one example per problem. A sweep over the same data must still behave as
before: label mistakes stop the load with file:line, unreadable images are skipped with a reason.
Nothing here reaches the network.
"""

from __future__ import annotations

import csv
import json
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from promptgrade.cli import app
from promptgrade.data import FolderDatasetConfig, ParquetDatasetConfig, load_dataset_split
from promptgrade.data.validate import CODES, Finding, ValidationReport, validate_dataset
from promptgrade.errors import DatasetError
from promptgrade.task import Task, load_task

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / "experiments" / "tasks" / "meal_tray.yaml"
HEADER = ["id", "file", "categories", "food_remaining_pct", "split"]
MAX_SIDE = 256  # the broken set's image_max_side: "too large" starts at 8x this, 2048 px


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task(TASK)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct RGB image per seed, so no two examples are accidental duplicates."""
    base = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    noise = Image.effect_noise(size, 30 + seed).convert("RGB")
    return Image.blend(base, noise, 0.3)


def rotated_jpeg() -> bytes:
    image = photo(7, (300, 100))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    return encode(image, "JPEG", exif=exif.tobytes())


def rgba_png() -> bytes:
    image = photo(8).convert("RGBA")
    image.putalpha(Image.new("L", image.size, 255))
    image.paste((0, 0, 0, 0), (0, 0, 40, 40))  # a transparent corner
    return encode(image, "PNG")


def palette_png() -> bytes:
    return encode(photo(9).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")


def gray16_png() -> bytes:
    image = Image.new("I;16", (120, 120), 30000)
    image.paste(Image.new("I;16", (60, 120), 60000), (0, 0))
    return encode(image, "PNG")


def animated_gif() -> bytes:
    frames = [photo(20 + i).convert("P") for i in range(2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def bomb_png() -> bytes:
    """A real 1-bit PNG of 72 MP: a few KB on disk, 216 MB once decoded to RGB."""
    return encode(Image.new("1", (9000, 8000), 0), "PNG")


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    return data[: len(data) // 2]


LEAKED = encode(photo(13), "JPEG")  # one photo, filed under two ids in two splits

# id -> (file, its bytes or None for no file, categories, grade, split)
BROKEN: dict[str, tuple[str, bytes | None, str, object, str]] = {
    "ok-test": ("images/ok-test.jpg", encode(photo(1), "JPEG"), "soup", 40, "test"),
    "ok-train": ("images/ok-train.jpg", encode(photo(2), "JPEG"), "bread", 10, "train"),
    "empty": ("images/empty.jpg", b"", "stew", 5, "test"),
    "html": (
        "images/html.jpg",
        b"<!DOCTYPE html><html><body>403 Forbidden</body></html>",
        "curry",
        5,
        "test",
    ),
    "truncated": ("images/truncated.jpg", truncated_jpeg(), "pasta", 5, "test"),
    "text": ("images/notes.txt", b"lunch: rice, half eaten\n", "rice dish", 5, "test"),
    "svg": (
        "images/tray.svg",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        "salad",
        5,
        "test",
    ),
    "heic": (
        "images/tray.heic",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + b"\x00" * 64,
        "fruit",
        5,
        "test",
    ),
    "ico": ("images/tray.ico", encode(photo(3, (32, 32)), "ICO"), "snack", 5, "test"),
    "bomb": ("images/bomb.png", bomb_png(), "dessert", 5, "test"),
    "cmyk": ("images/cmyk.jpg", encode(photo(4).convert("CMYK"), "JPEG"), "pastry", 5, "test"),
    "gray16": ("images/gray16.png", gray16_png(), "porridge", 5, "test"),
    "rgba": ("images/rgba.png", rgba_png(), "dumpling", 5, "test"),
    "palette": ("images/palette.png", palette_png(), "egg dish", 5, "test"),
    "rotated": ("images/rotated.jpg", rotated_jpeg(), "sandwich", 5, "test"),
    "tiny": ("images/tiny.png", encode(photo(10, (10, 10)), "PNG"), "meat dish", 5, "test"),
    "strip": ("images/strip.png", encode(photo(11, (2000, 100)), "PNG"), "poultry dish", 5, "test"),
    "huge": ("images/huge.jpg", encode(photo(12, (2100, 1600)), "JPEG"), "seafood dish", 5, "test"),
    "animated": ("images/animated.gif", animated_gif(), "vegetable dish", 5, "test"),
    "leak-train": ("images/leak-a.jpg", LEAKED, "soup", 50, "train"),
    "leak-test": ("images/leak-b.jpg", LEAKED, "soup", 50, "test"),
    "no-label": ("images/no-label.jpg", encode(photo(14), "JPEG"), "", 5, "test"),
    "unknown": ("images/unknown.jpg", encode(photo(15), "JPEG"), "soupp", 5, "test"),
    "grade-120": ("images/grade.jpg", encode(photo(16), "JPEG"), "stew", 120, "test"),
    "no-grade": ("images/no-grade.jpg", encode(photo(17), "JPEG"), "curry", "", "test"),
    "missing": ("images/missing.jpg", None, "bread", 5, "test"),
}
DUPLICATE_ROW = ["ok-test", "images/twin.jpg", "salad", 20, "test"]  # the last row of labels.csv

# What each example must be reported for (code -> severity); nothing else may be reported about it.
EXPECTED: dict[str, dict[str, str]] = {
    "ok-test": {"duplicate_id": "error"},
    "ok-train": {},
    "empty": {"empty_file": "error"},
    "html": {"not_an_image": "error"},
    "truncated": {"truncated_image": "error"},
    "text": {"not_an_image": "error"},
    "svg": {"unsupported_format": "error"},
    "heic": {"unsupported_format": "error"},
    "ico": {"unsupported_format": "error"},
    "bomb": {"decompression_bomb": "error"},
    "cmyk": {"converted_mode": "warning"},  # no colour profile: colours by formula
    "gray16": {"converted_mode": "warning"},
    "rgba": {"converted_mode": "warning"},  # has transparent pixels
    "palette": {"converted_mode": "info"},
    "rotated": {"exif_rotated": "info"},
    "tiny": {"too_small": "warning"},
    "strip": {"extreme_aspect": "warning"},
    "huge": {"too_large": "info"},
    "animated": {"multi_frame": "info", "converted_mode": "info"},  # GIF frames are palette images
    "leak-train": {},
    "leak-test": {"duplicate_image": "error"},
    "no-label": {"missing_labels": "error"},
    "unknown": {"unknown_category": "error"},
    "grade-120": {"grade_out_of_range": "error"},
    "no-grade": {"missing_grade": "warning"},
    "missing": {"missing_file": "error"},
}


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def write_broken(root: Path, ids: list[str] | None = None, *, duplicate: bool = True) -> Path:
    """The broken set (or the ``ids`` of it) as a folder + labels.csv under ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows: list[list[object]] = []
    for example_id in ids or list(BROKEN):
        file, data, categories, grade, split = BROKEN[example_id]
        if data is not None:
            (root / file).write_bytes(data)
        rows.append([example_id, file, categories, grade, split])
    if duplicate:
        (root / "images" / "twin.jpg").write_bytes(encode(photo(18), "JPEG"))
        rows.append(DUPLICATE_ROW)
    write_csv(root / "labels.csv", rows)
    return root


def config(**fields: Any) -> FolderDatasetConfig:
    return FolderDatasetConfig(kind="folder", path=Path("broken"), image_max_side=MAX_SIDE, **fields)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_broken(tmp_path_factory.mktemp("validate") / "broken")


@pytest.fixture(scope="module")
def report(broken: Path, task: Task) -> ValidationReport:
    return validate_dataset(config(), task, broken.parent)


def by_example(findings: list[Finding]) -> dict[str | None, dict[str, str]]:
    found: dict[str | None, dict[str, str]] = {}
    for finding in findings:
        found.setdefault(finding.example_id, {})[finding.code] = finding.severity
    return found


def one(report: ValidationReport, example_id: str, code: str) -> Finding:
    matches = [f for f in report.findings if f.example_id == example_id and f.code == code]
    assert len(matches) == 1, matches
    return matches[0]


# --------------------------------------------------------------------------------------------------
# the library


def test_every_problem_is_found_once_with_its_code_and_severity(report: ValidationReport) -> None:
    found = by_example(report.findings)
    assert {k: found.get(k, {}) for k in EXPECTED} == EXPECTED
    assert set(found) - set(EXPECTED) == set()  # nothing about examples that are not in the set
    assert all(f.code in CODES for f in report.findings)
    assert all(f.message and f.fix and f.where for f in report.findings)


def test_label_problems_point_at_the_labels_line_and_say_what_to_use(
    report: ValidationReport, broken: Path
) -> None:
    labels = str(broken / "labels.csv")
    line = {example_id: index + 2 for index, example_id in enumerate(BROKEN)}  # header is line 1

    unknown = one(report, "unknown", "unknown_category")
    assert unknown.where == f"{labels}:{line['unknown']}"
    assert "'soupp'" in unknown.message and "closest allowed: 'soup'" in unknown.message
    assert unknown.fix.startswith("use 'soup'")

    grade = one(report, "grade-120", "grade_out_of_range")
    assert grade.where == f"{labels}:{line['grade-120']}"
    assert "120 is outside the task's scale [0, 100]" in grade.message
    assert "from 0 to 100" in grade.fix

    no_label = one(report, "no-label", "missing_labels")
    assert no_label.message == "no categories given" and "soup" in no_label.fix

    twin = one(report, "ok-test", "duplicate_id")
    assert twin.where == f"{labels}:{len(BROKEN) + 2}"
    assert f"first at line {line['ok-test']}" in twin.message and "own id" in twin.fix

    no_grade = one(report, "no-grade", "missing_grade")
    assert "grade metrics will exclude" in no_grade.message and no_grade.where.startswith(labels)


def test_image_problems_name_the_file_say_what_it_is_and_that_it_is_skipped(
    report: ValidationReport, broken: Path
) -> None:
    expectations = {
        ("empty", "empty_file"): "empty (0 bytes)",
        ("html", "not_an_image"): "HTML page",
        ("text", "not_an_image"): "is text",
        ("svg", "unsupported_format"): "SVG",
        ("heic", "unsupported_format"): "HEIC",
        ("ico", "unsupported_format"): "ICO",  # named by Pillow, though the grading path refuses it
        ("truncated", "truncated_image"): "truncated",
        ("bomb", "decompression_bomb"): "9000x8000",
        ("missing", "missing_file"): "not found",
    }
    for (example_id, code), words in expectations.items():
        finding = one(report, example_id, code)
        assert words in finding.message, finding
        assert finding.where == str(broken / BROKEN[example_id][0])
        assert finding.fix.endswith("(a sweep skips this example)")
        assert finding.split == "test"
    assert "convert it to JPEG or PNG" in one(report, "heic", "unsupported_format").fix


def test_silent_changes_are_explained(report: ValidationReport) -> None:
    assert "CMYK: no colour profile" in one(report, "cmyk", "converted_mode").message
    gray = one(report, "gray16", "converted_mode")
    assert "PNG I;16: 16/32-bit greyscale: scaled to 8 bits" in gray.message
    assert "filled with white" in one(report, "rgba", "converted_mode").message
    assert "palette" in one(report, "palette", "converted_mode").message
    rotated = one(report, "rotated", "exif_rotated")
    assert "orientation 6" in rotated.message and "rotated 90° clockwise" in rotated.message
    assert "10×10" in one(report, "tiny", "too_small").message
    strip = one(report, "strip", "extreme_aspect")
    assert "2000×100 is 20:1" in strip.message and f"fitted to {MAX_SIDE} px the short side is 13 px" in (
        strip.message
    )
    assert "2100×1600" in one(report, "huge", "too_large").message
    assert "2 frames" in one(report, "animated", "multi_frame").message


def test_same_image_in_train_and_test_is_a_leak(report: ValidationReport, broken: Path) -> None:
    leak = one(report, "leak-test", "duplicate_image")
    assert leak.severity == "error" and leak.split == "test"
    assert "'leak-train' (train)" in leak.message and "'train' and the 'test' split" in leak.message
    assert leak.where == str(broken / "images" / "leak-b.jpg")


def test_same_image_twice_in_one_split_is_a_warning(tmp_path: Path, task: Task) -> None:
    root = write_broken(tmp_path / "broken", ["ok-test", "ok-train"], duplicate=False)
    (root / "images" / "copy.jpg").write_bytes(BROKEN["ok-test"][1] or b"")
    with (root / "labels.csv").open("a", encoding="utf-8") as handle:
        handle.write("copy,images/copy.jpg,soup,40,test\n")

    found = validate_dataset(config(), task, tmp_path)

    # ordered by id, "copy" comes first, so the later "ok-test" is the one reported
    assert [(f.example_id, f.code, f.severity) for f in found.findings] == [
        ("ok-test", "duplicate_image", "warning")
    ]
    assert "same image as 'copy' (test)" in found.findings[0].message
    assert found.ok and found.usable == 3


def test_report_counts_splits_and_usable_examples(report: ValidationReport) -> None:
    n_test = sum(1 for v in BROKEN.values() if v[4] == "test") + 1  # + the duplicate row
    assert report.n_examples == {"test": n_test, "train": 2}
    errors = {k for k, codes in EXPECTED.items() if "error" in codes.values()}
    assert report.usable == len(BROKEN) + 1 - len(errors) - 1  # both rows named ok-test are out
    assert not report.ok
    assert report.counts["error"] == sum(list(c.values()).count("error") for c in EXPECTED.values())
    assert report.by_code["unsupported_format"] == 3
    assert report.counts_for("train") == {"error": 0, "warning": 0, "info": 0}
    assert [f.severity for f in report.findings] == sorted(
        (f.severity for f in report.findings), key=["error", "warning", "info"].index
    )
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["ok"] is False and len(as_json["findings"]) == len(report.findings)


def test_splits_can_be_chosen_and_a_missing_default_train_split_is_only_info(
    tmp_path: Path, broken: Path, task: Task
) -> None:
    only_train = validate_dataset(config(), task, broken.parent, ["train"])
    assert [s.split for s in only_train.splits] == ["train"]
    # label problems anywhere in the file still block a sweep, so they are reported, under their split
    assert {f.split for f in only_train.findings} == {"test"}
    assert only_train.counts_for(None)["error"] > 0

    root = tmp_path / "nosplit"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(encode(photo(1), "JPEG"))
    (root / "labels.csv").write_text("id,file,categories\na,images/a.jpg,soup\n", encoding="utf-8")
    plain = validate_dataset(FolderDatasetConfig(kind="folder", path=Path("nosplit")), task, tmp_path)
    codes = [(f.code, f.severity) for f in plain.findings]
    assert ("missing_split", "info") in codes  # no 'train' split: fine unless you train a baseline
    assert ("missing_grade", "warning") in codes  # one finding for the split, not one per example
    assert plain.ok and plain.usable == 1

    asked = validate_dataset(config(), task, broken.parent, ["holdout"])
    missing = [f for f in asked.findings if f.code == "missing_split"]
    assert [(f.severity, f.split) for f in missing] == [("error", "holdout")]
    assert "splits present: test, train" in missing[0].message


def test_an_unreadable_dataset_is_one_finding_not_a_crash(tmp_path: Path, task: Task) -> None:
    found = validate_dataset(FolderDatasetConfig(kind="folder", path=Path("nowhere")), task, tmp_path)
    assert [(f.code, f.severity) for f in found.findings] == [("dataset_error", "error")] * 1
    assert "dataset folder not found" in found.findings[0].message
    assert [s.checked for s in found.splits] == [False, False]


def test_table_sources_are_validated_too(tmp_path: Path, task: Task) -> None:
    import datasets

    cells = [encode(photo(1), "JPEG"), b"\xff\xd8\xff garbage", encode(photo(2), "JPEG")]
    datasets.Dataset.from_dict(
        {
            "name": ["pho", "bad", "pho"],
            "coarse_categories": [["Noodle dishes"], ["soup"], ["Sandwichez", "soup"]],
            "image1": [{"bytes": data, "path": None} for data in cells],
        },
        features=datasets.Features(
            {
                "name": datasets.Value("string"),
                "coarse_categories": datasets.List(datasets.Value("string")),
                "image1": datasets.Image(),
            }
        ),
    ).to_parquet(str(tmp_path / "kb.parquet"))
    table = ParquetDatasetConfig(kind="parquet", path="kb.parquet", split="main")

    found = validate_dataset(table, task, tmp_path, cache_dir=tmp_path / "cache")

    codes = {(f.example_id, f.code) for f in found.findings}
    assert {("pho", "duplicate_id"), ("pho", "unknown_category"), ("bad", "unreadable_image")} <= codes
    assert ("main", "missing_grade") not in codes
    assert found.n_examples == {"main": 3, "train": 0}  # no train split: an info finding, not an error
    assert ("missing_split", "info") in {(f.code, f.severity) for f in found.findings}


# --------------------------------------------------------------------------------------------------
# the loader still behaves as before: fail fast on labels, skip unreadable images


def test_a_sweep_load_still_stops_at_the_first_label_error(broken: Path, task: Task) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset_split(config(), task, broken.parent)
    first_bad = list(BROKEN).index("no-label") + 2
    assert str(caught.value) == (
        f"{broken / 'labels.csv'}:{first_bad}: example 'no-label': no categories given"
    )


def test_a_sweep_load_skips_exactly_the_images_validation_calls_errors(tmp_path: Path, task: Task) -> None:
    label_problems = {"no-label", "unknown", "grade-120", "leak-test"}
    root = write_broken(tmp_path / "broken", [k for k in BROKEN if k not in label_problems], duplicate=False)

    loaded = load_dataset_split(config(), task, tmp_path)
    found = validate_dataset(config(), task, tmp_path, ["test"])

    errors = {f.example_id: f for f in found.findings if f.severity == "error"}
    skipped = {s.id: s.reason for s in loaded.skipped}
    assert set(skipped) == set(errors) == {
        "empty", "html", "truncated", "text", "svg", "heic", "ico", "bomb", "missing"
    }  # fmt: skip
    assert "HTML" in skipped["html"] and "not found" in skipped["missing"]
    assert found.usable == len(loaded.examples)
    assert {e.id for e in loaded.examples} >= {"cmyk", "gray16", "rgba", "rotated", "tiny", "strip"}
    assert root.is_dir()


# --------------------------------------------------------------------------------------------------
# the command


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["validate-data", *args], env={"COLUMNS": "200"})


def test_cli_passes_the_bundled_sample_set() -> None:
    result = invoke(str(REPO / "experiments" / "meal_tray.yaml"))
    assert result.exit_code == 0, result.output
    assert "split test: 64 examples, 64 usable — 0 errors, 0 warnings, 0 info" in result.output
    assert "split train: 192 examples, 192 usable" in result.output
    assert "no errors" in result.output


def test_cli_fails_the_broken_set_and_writes_every_finding(
    broken: Path, tmp_path: Path, report: ValidationReport
) -> None:
    experiment = tmp_path / "broken.yaml"
    experiment.write_text(
        f"name: broken\ntask: {TASK}\nprompts: [meal_tray_json@1]\n"
        f"dataset: {{kind: folder, path: {broken}, image_max_side: {MAX_SIDE}}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "findings.json"

    result = invoke(str(experiment), "--max-findings", "5", "--json", str(out))

    assert result.exit_code == 1, result.output
    assert "severity" in result.output and "what to do" in result.output
    assert f"… {len(report.findings) - 5} more finding(s) not shown" in result.output
    assert f"split test: {report.n_examples['test']} examples" in result.output
    assert f"{report.counts['error']} error(s)" in result.output
    written = json.loads(out.read_text(encoding="utf-8"))
    assert len(written["findings"]) == len(report.findings)
    assert {f["code"] for f in written["findings"]} == set(report.by_code)
    assert written["splits"][0] | {"split": "test"} == written["splits"][0]


def test_cli_user_mistakes_exit_2(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "experiment file not found" in result.output
