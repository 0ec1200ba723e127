"""Given labelled images in a folder, parquet, a Hub-style directory or S3, I get checked examples.

Nothing here reaches the internet: sockets to anything but loopback fail the test, S3 is moto
in-process, and the Hugging Face code paths read local files only.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from promptgrade.data import (
    DatasetConfig,
    FolderDatasetConfig,
    HFDatasetConfig,
    LoadedDataset,
    ParquetDatasetConfig,
    S3DatasetConfig,
    load_dataset_split,
)
from promptgrade.errors import DatasetError
from promptgrade.task import Task, load_task

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
HEADER = ["id", "file", "categories", "food_remaining_pct", "split"]


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task(REPO / "experiments" / "tasks" / "meal_tray.yaml")


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


ROWS: list[list[object]] = [
    ["t-03", "images/a.jpg", "Soups", 40, "test"],  # plural and capitals: stored canonically
    ["t-01", "images/b.jpg", "rice dish;salad", 100, "test"],
    ["t-02", "images/c.jpg", "Noodle Dish | dessert", "", "test"],
    ["t-04", "images/d.jpg", "bread", 0, "train"],
    ["t-05", "images/e.jpg", "curry", 55, "train"],
    ["t-06", "images/f.jpg", "stew", 5, "validation"],
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A tmp folder of six real sample images with hand-written labels."""
    root = tmp_path / "trays"
    (root / "images").mkdir(parents=True)
    sources = sorted((SAMPLE / "images").glob("*.jpg"))[:6]
    assert len(sources) == 6, "run scripts/make_sample_set.py to create data/sample"
    for source, row in zip(sources, ROWS, strict=True):
        shutil.copy(source, root / str(row[1]))
    write_csv(root / "labels.csv", HEADER, ROWS)
    return root


def folder_config(**fields: Any) -> FolderDatasetConfig:
    return FolderDatasetConfig(kind="folder", path=Path("trays"), **fields)


def load(config: Any, task: Task, base: Path, split: str | None = None, **kwargs: Any) -> LoadedDataset:
    return load_dataset_split(config, task, base, split, **kwargs)


# --------------------------------------------------------------------------------------------------
# folder + labels.csv


def test_folder_happy_path(folder: Path, task: Task) -> None:
    loaded = load(folder_config(), task, folder.parent)

    assert (loaded.name, loaded.split) == ("trays", "test")
    assert [e.id for e in loaded.examples] == ["t-01", "t-02", "t-03"]  # ordered by id
    labels = {e.id: e.labels for e in loaded.examples}
    assert labels["t-01"].categories == ("rice dish", "salad")
    assert labels["t-02"].categories == ("noodle dish", "dessert")
    assert labels["t-03"].categories == ("soup",)
    assert (labels["t-01"].grade, labels["t-02"].grade, labels["t-03"].grade) == (100.0, None, 40.0)
    assert all(e.image.mime_type == "image/jpeg" and len(e.image.sha256) == 64 for e in loaded.examples)
    assert loaded.skipped == []


def test_other_splits_limit_and_stable_hash(folder: Path, task: Task) -> None:
    train = load(folder_config(), task, folder.parent, "train")
    assert [e.id for e in train.examples] == ["t-04", "t-05"]

    first = load(folder_config(limit=2), task, folder.parent)
    assert [e.id for e in first.examples] == ["t-01", "t-02"]
    again = load(folder_config(limit=2), task, folder.parent)
    assert first.sha256 == again.sha256
    assert first.sha256 != load(folder_config(), task, folder.parent).sha256
    assert first.sha256 != load(folder_config(limit=2, image_max_side=64), task, folder.parent).sha256


def test_unknown_split_lists_the_present_ones(folder: Path, task: Task) -> None:
    with pytest.raises(DatasetError, match=r"split 'holdout' has no examples; splits present: test, train"):
        load(folder_config(split="holdout"), task, folder.parent)


def test_label_outside_vocabulary_names_file_line_and_suggests(folder: Path, task: Task) -> None:
    rows = [*ROWS]
    rows[2] = ["t-02", "images/c.jpg", "noodle dish;soupp", 10, "test"]
    labels = write_csv(folder / "labels.csv", HEADER, rows)

    with pytest.raises(DatasetError) as caught:
        load(folder_config(), task, folder.parent)
    message = str(caught.value)
    assert message.startswith(f"{labels}:4: ")  # header is line 1, so the third row is line 4
    assert "'soupp'" in message and "closest allowed: 'soup'" in message
    assert "t-02" in message


def test_label_far_from_any_category_lists_the_allowed_ones(folder: Path, task: Task) -> None:
    write_csv(folder / "labels.csv", HEADER, [["x", "images/a.jpg", "xyzzy", 1, "test"]])
    with pytest.raises(DatasetError, match=r"'xyzzy' is not in task 'meal_tray'; allowed: soup, stew"):
        load(folder_config(), task, folder.parent)


@pytest.mark.parametrize(("grade", "expected"), [(120, "outside the task's scale"), ("lots", "not a number")])
def test_bad_grade_names_the_line(folder: Path, task: Task, grade: object, expected: str) -> None:
    rows = [*ROWS]
    rows[4] = ["t-05", "images/e.jpg", "curry", grade, "train"]
    labels = write_csv(folder / "labels.csv", HEADER, rows)
    with pytest.raises(DatasetError, match=expected) as caught:
        load(folder_config(), task, folder.parent)
    assert str(caught.value).startswith(f"{labels}:6: ")


def test_duplicate_id_is_an_error(folder: Path, task: Task) -> None:
    labels = write_csv(folder / "labels.csv", HEADER, [*ROWS, ["t-01", "images/a.jpg", "soup", 5, "train"]])
    with pytest.raises(DatasetError, match=r"duplicate id 't-01' \(first at line 3\)") as caught:
        load(folder_config(), task, folder.parent)
    assert str(caught.value).startswith(f"{labels}:8: ")


def test_missing_folder_and_missing_labels_name_the_path(tmp_path: Path, folder: Path, task: Task) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found") as caught:
        load(FolderDatasetConfig(kind="folder", path=Path("nowhere")), task, tmp_path)
    assert str(tmp_path / "nowhere") in str(caught.value)

    with pytest.raises(DatasetError, match="labels CSV not found") as caught:
        load(folder_config(labels=Path("trays/other.csv")), task, folder.parent)
    assert str(folder / "other.csv") in str(caught.value)


def test_missing_columns_are_named(folder: Path, task: Task) -> None:
    labels = write_csv(folder / "labels.csv", ["id", "image", "categories"], [["a", "images/a.jpg", "soup"]])
    with pytest.raises(DatasetError, match=r"lacks column\(s\) file") as caught:
        load(folder_config(), task, folder.parent)
    assert str(caught.value).startswith(f"{labels}:1: ")


def test_unreadable_images_are_skipped_not_fatal(folder: Path, task: Task) -> None:
    (folder / "images" / "a.jpg").write_bytes(b"<html>Not Found</html>")
    good = (folder / "images" / "b.jpg").read_bytes()
    (folder / "images" / "b.jpg").write_bytes(good[: len(good) // 2])
    (folder / "images" / "c.jpg").unlink()
    write_csv(folder / "labels.csv", HEADER, [*ROWS, ["t-07", "images/d.jpg", "bread", 50, "test"]])

    loaded = load(folder_config(), task, folder.parent)

    assert [e.id for e in loaded.examples] == ["t-07"]
    reasons = {s.id: s.reason for s in loaded.skipped}
    assert set(reasons) == {"t-01", "t-02", "t-03"}
    assert "truncated" in reasons["t-01"]
    assert "not found" in reasons["t-02"]
    assert "HTML" in reasons["t-03"]


def test_all_images_unreadable_is_an_error(folder: Path, task: Task) -> None:
    for image in (folder / "images").glob("*.jpg"):
        image.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"all 3 examples of split 'test' were skipped; first: .*empty"):
        load(folder_config(), task, folder.parent)


def test_file_outside_the_folder_is_refused(folder: Path, task: Task) -> None:
    write_csv(folder / "labels.csv", HEADER, [["a", "../secret.jpg", "soup", 5, "test"]])
    with pytest.raises(DatasetError, match="must be a relative path inside the dataset folder"):
        load(folder_config(), task, folder.parent)


def test_grades_csv_is_joined_by_id(folder: Path, task: Task) -> None:
    write_csv(
        folder.parent / "grades.csv", ["id", "food_remaining_pct"], [["t-02", 35], ["t-03", 0], ["zz", 5]]
    )
    loaded = load(folder_config(grades=Path("grades.csv")), task, folder.parent)
    grades = {e.id: e.labels.grade for e in loaded.examples}
    assert grades == {"t-01": 100.0, "t-02": 35.0, "t-03": 0.0}


def test_grades_csv_errors_name_its_line(folder: Path, task: Task) -> None:
    grades = write_csv(folder / "grades.csv", ["id", "food_remaining_pct"], [["t-01", 5], ["t-02", -5]])
    with pytest.raises(DatasetError, match="outside") as caught:
        load(folder_config(grades=Path("trays/grades.csv")), task, folder.parent)
    assert str(caught.value).startswith(f"{grades}:3: ")

    write_csv(grades, ["id", "food_remaining_pct"], [["T01", 5]])
    with pytest.raises(DatasetError, match="no id in the grades CSV matches"):
        load(folder_config(grades=Path("trays/grades.csv")), task, folder.parent)


# --------------------------------------------------------------------------------------------------
# parquet and Hugging Face (food-kb's schema, built locally)


def food_kb_table(path: Path, *, rows: int = 4, corrupt: str | None = "d", extra: dict | None = None) -> Path:
    """A small parquet file with worldcuisines/food-kb's columns, written by `datasets` itself."""
    import datasets

    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (90, 90, 90)]
    names = ["pho", "nasi goreng", "borscht", "d", "e"][:rows]
    data: dict[str, list[Any]] = {
        "name": names,
        "alias": [f"{n} alias" for n in names],
        "coarse_categories": [["Noodle dishes", "Soups"], ["Rice dishes"], ["soup"], ["bread"], ["dessert"]][
            :rows
        ],
        "fine_categories": [["beef noodle soup"], ["fried rice"], ["beet soup"], ["x"], ["y"]][:rows],
        "region1": ["Asia", "Asia", "Europe", "x", "y"][:rows],
        "image1": [
            {"bytes": b"\xff\xd8\xff garbage" if n == corrupt else jpeg(c), "path": None}
            for n, c in zip(names, colours, strict=False)
        ],
        "image1_url": [f"https://example.org/{n}.jpg" for n in names],
    }
    features = {
        "name": datasets.Value("string"),
        "alias": datasets.Value("string"),
        "coarse_categories": datasets.List(datasets.Value("string")),
        "fine_categories": datasets.List(datasets.Value("string")),
        "region1": datasets.Value("string"),
        "image1": datasets.Image(),
        "image1_url": datasets.Value("string"),
    }
    for column, (feature, values) in (extra or {}).items():
        features[column] = feature
        data[column] = values[:rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(data, features=datasets.Features(features)).to_parquet(str(path))
    return path


def test_parquet_with_food_kb_schema(tmp_path: Path, task: Task) -> None:
    food_kb_table(tmp_path / "kb.parquet")
    config = ParquetDatasetConfig(kind="parquet", path="kb.parquet", split="main")

    loaded = load(config, task, tmp_path, cache_dir=tmp_path / "cache")

    assert (loaded.name, loaded.split) == ("kb.parquet", "main")
    assert [e.id for e in loaded.examples] == ["borscht", "nasi goreng", "pho"]
    labels = {e.id: e.labels for e in loaded.examples}
    assert labels["pho"].categories == ("noodle dish", "soup")
    assert labels["nasi goreng"].categories == ("rice dish",)
    assert all(label.grade is None for label in labels.values())  # food-kb has no grades
    assert [s.id for s in loaded.skipped] == ["d"]


def test_parquet_split_and_grade_columns(tmp_path: Path, task: Task) -> None:
    import datasets

    extra = {
        "split": (datasets.Value("string"), ["test", "train", "test", "train"]),
        "left": (datasets.Value("float64"), [10.0, 20.0, None, 30.0]),
    }
    food_kb_table(tmp_path / "kb.parquet", corrupt=None, extra=extra)
    config = ParquetDatasetConfig(kind="parquet", path="*.parquet", split_column="split", grade_column="left")

    test = load(config, task, tmp_path, cache_dir=tmp_path / "cache")
    assert {e.id: e.labels.grade for e in test.examples} == {"pho": 10.0, "borscht": None}
    train = load(config, task, tmp_path, "train", cache_dir=tmp_path / "cache")
    assert [e.id for e in train.examples] == ["d", "nasi goreng"]


def test_parquet_without_split_column_refuses_another_split(tmp_path: Path, task: Task) -> None:
    food_kb_table(tmp_path / "kb.parquet")
    config = ParquetDatasetConfig(kind="parquet", path="kb.parquet", split="main")
    with pytest.raises(DatasetError, match="whole file is split 'main'; cannot select 'train'"):
        load(config, task, tmp_path, "train", cache_dir=tmp_path / "cache")


def test_table_label_outside_vocabulary_names_the_example(tmp_path: Path, task: Task) -> None:
    import datasets

    path = food_kb_table(
        tmp_path / "kb.parquet",
        extra={"cats": (datasets.Value("string"), ["soup", "Noodle dish", "Sandwiches", "Noodle soups"])},
    )
    config = ParquetDatasetConfig(kind="parquet", path=str(path), split="main", categories_column="cats")
    with pytest.raises(DatasetError, match=r"example 'd': category 'Noodle soups' is not in task") as caught:
        load(config, task, tmp_path, cache_dir=tmp_path / "cache")
    assert "closest allowed: 'noodle dish', 'soup'" in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_url_column_needs_download(tmp_path: Path, task: Task) -> None:
    food_kb_table(tmp_path / "kb.parquet")
    config = ParquetDatasetConfig(kind="parquet", path="kb.parquet", split="main", image_column="image1_url")
    with pytest.raises(DatasetError, match=r"holds URLs .*`download: true`"):
        load(config, task, tmp_path, cache_dir=tmp_path / "cache")


def test_missing_column_and_missing_file(tmp_path: Path, task: Task) -> None:
    food_kb_table(tmp_path / "kb.parquet")
    config = ParquetDatasetConfig(kind="parquet", path="kb.parquet", split="main", image_column="photo")
    with pytest.raises(DatasetError, match=r"column\(s\) photo not found; columns: name, alias"):
        load(config, task, tmp_path, cache_dir=tmp_path / "cache")

    with pytest.raises(DatasetError, match="parquet file not found") as caught:
        load(ParquetDatasetConfig(kind="parquet", path="nope/*.parquet"), task, tmp_path)
    assert str(tmp_path / "nope") in str(caught.value)


def test_hf_kind_reads_a_hub_style_directory_offline(tmp_path: Path, task: Task) -> None:
    """The same `load_dataset(path, split="main")` call as for worldcuisines/food-kb on the Hub."""
    food_kb_table(tmp_path / "food-kb" / "data" / "main-00000-of-00001.parquet")
    write_csv(tmp_path / "grades.csv", ["id", "food_remaining_pct"], [["pho", 25], ["borscht", 80]])
    config = HFDatasetConfig(kind="hf", path="food-kb", grades=Path("grades.csv"))
    assert config.split == "main" and config.image_column == "image1"

    loaded = load(config, task, tmp_path, cache_dir=tmp_path / "cache")

    assert loaded.name == "food-kb"
    assert {e.id: e.labels.grade for e in loaded.examples} == {
        "borscht": 80.0,
        "nasi goreng": None,
        "pho": 25.0,
    }
    assert [s.id for s in loaded.skipped] == ["d"]
    # the same rows through the parquet kind hash the same: the hash is about content, not source
    parquet = ParquetDatasetConfig(
        kind="parquet", path="food-kb/data/*.parquet", split="main", grades=Path("grades.csv")
    )
    assert load(parquet, task, tmp_path, cache_dir=tmp_path / "cache").sha256 == loaded.sha256


def test_hf_kind_errors(tmp_path: Path, task: Task) -> None:
    food_kb_table(tmp_path / "food-kb" / "data" / "main-00000-of-00001.parquet")
    with pytest.raises(DatasetError, match="split 'test' not found"):
        load(
            HFDatasetConfig(kind="hf", path="food-kb", split="test"), task, tmp_path, cache_dir=tmp_path / "c"
        )
    with pytest.raises(DatasetError, match="dataset directory not found") as caught:
        load(HFDatasetConfig(kind="hf", path="./missing"), task, tmp_path)
    assert str(tmp_path / "missing") in str(caught.value)


def test_hf_id_column_falls_back_to_row_index_only_by_default(tmp_path: Path, task: Task) -> None:
    import datasets

    table = datasets.Dataset.from_dict(
        {"image1": [{"bytes": jpeg((9, 9, 9)), "path": None}], "coarse_categories": [["soup"]]},
        features=datasets.Features(
            {"image1": datasets.Image(), "coarse_categories": datasets.List(datasets.Value("string"))}
        ),
    )
    (tmp_path / "anon" / "data").mkdir(parents=True)
    table.to_parquet(str(tmp_path / "anon" / "data" / "main-00000-of-00001.parquet"))

    loaded = load(HFDatasetConfig(kind="hf", path="anon"), task, tmp_path, cache_dir=tmp_path / "c")
    assert [e.id for e in loaded.examples] == ["0"]
    with pytest.raises(DatasetError, match=r"column\(s\) dish not found"):
        load(
            HFDatasetConfig(kind="hf", path="anon", id_column="dish"),
            task,
            tmp_path,
            cache_dir=tmp_path / "c",
        )


# --------------------------------------------------------------------------------------------------
# S3 (moto, in-process)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    moto = pytest.importorskip("moto")
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="trays")
        yield client


def upload_folder(client: Any, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket="trays", Key=prefix + path.relative_to(folder).as_posix(), Body=path.read_bytes()
            )


def test_s3_folder_layout_is_downloaded_and_cached(s3: Any, folder: Path, tmp_path: Path, task: Task) -> None:
    upload_folder(s3, folder, "sets/v1/")
    config = S3DatasetConfig(kind="s3", uri="s3://trays/sets/v1/")
    cache = tmp_path / "cache"

    loaded = load(config, task, tmp_path, cache_dir=cache)

    assert loaded.name == "s3://trays/sets/v1"
    assert [e.id for e in loaded.examples] == ["t-01", "t-02", "t-03"]
    local = load(folder_config(), task, folder.parent)
    assert loaded.sha256 == local.sha256
    assert (cache / "s3" / "trays" / "sets" / "v1" / "images" / "a.jpg").is_file()
    assert not (cache / "s3" / "trays" / "sets" / "v1" / "images" / "d.jpg").exists()  # train only

    # a changed object (new ETag) is fetched again; the cache is not trusted blindly
    s3.put_object(Bucket="trays", Key="sets/v1/images/a.jpg", Body=jpeg((250, 250, 0)))
    changed = load(config, task, tmp_path, cache_dir=cache)
    assert changed.sha256 != loaded.sha256


def test_s3_object_missing_is_skipped_and_missing_labels_is_an_error(
    s3: Any, folder: Path, tmp_path: Path, task: Task
) -> None:
    upload_folder(s3, folder, "v2/")
    s3.delete_object(Bucket="trays", Key="v2/images/b.jpg")
    loaded = load(S3DatasetConfig(kind="s3", uri="s3://trays/v2"), task, tmp_path, cache_dir=tmp_path / "c")
    assert [s.id for s in loaded.skipped] == ["t-01"]

    with pytest.raises(DatasetError, match=r"labels\.csv not found under the prefix") as caught:
        load(S3DatasetConfig(kind="s3", uri="s3://trays/empty/"), task, tmp_path, cache_dir=tmp_path / "c")
    assert "s3://trays/empty/" in str(caught.value)

    with pytest.raises(DatasetError, match="NoSuchBucket"):
        load(
            S3DatasetConfig(kind="s3", uri="s3://no-such-bucket/x/"), task, tmp_path, cache_dir=tmp_path / "c"
        )


# --------------------------------------------------------------------------------------------------
# config


def test_dataset_config_is_a_discriminated_union() -> None:
    adapter = TypeAdapter(DatasetConfig)
    assert isinstance(
        adapter.validate_python({"kind": "hf", "path": "worldcuisines/food-kb"}), HFDatasetConfig
    )
    assert isinstance(adapter.validate_python({"kind": "folder", "path": "data/sample"}), FolderDatasetConfig)
    with pytest.raises(ValidationError, match="extra"):
        adapter.validate_python({"kind": "folder", "path": "x", "lables": "l.csv"})
    with pytest.raises(ValidationError, match="not an S3 URI"):
        adapter.validate_python({"kind": "s3", "uri": "https://bucket/prefix"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "sql", "path": "x"})


def test_relative_paths_resolve_against_the_experiment_folder(tmp_path: Path) -> None:
    base = tmp_path / "experiments"
    folder = FolderDatasetConfig(kind="folder", path=Path("../data/sample"), grades=Path("g.csv")).resolved(
        base
    )
    assert folder.path == tmp_path / "data" / "sample"
    assert folder.labels == tmp_path / "data" / "sample" / "labels.csv"
    assert folder.grades == base / "g.csv"

    hub = HFDatasetConfig(kind="hf", path="worldcuisines/food-kb").resolved(base)
    assert hub.path == "worldcuisines/food-kb"  # a hub id is not a path
    local = HFDatasetConfig(kind="hf", path="./kb").resolved(base)
    assert local.path == str(base / "kb")
