"""Given a swept prompt that shows reference trays, when I promote it, then the bundle carries the
prepared reference images the sweep sent (files beside the template, labels and hashes in the
manifest), and a bundle whose images or labels changed afterwards is refused, naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import ROOT
from helpers.promoted_references import N_REFERENCES, Promoted, promote, sweep_and_promote
from helpers.sweeps import module_lab
from promptgrade.bundle import FORMAT_VERSION, MANIFEST, load_bundle
from promptgrade.errors import ConfigError, TrackingError
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.tracking.read import RunStore


@pytest.fixture(scope="module")
def promoted_once(
    tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path
) -> Iterator[tuple[Promoted, str]]:
    """One sweep and promotion for the tests that only read the store: (what it left, its tracking URI)."""
    with module_lab(tmp_path_factory, _migrated_mlflow_db, "promoted-references") as lab:
        yield sweep_and_promote(lab.folder, lab.server, lab.tracking), lab.tracking


@pytest.fixture
def promoted(promoted_once: tuple[Promoted, str], tmp_path: Path) -> Promoted:
    """A copy of the module's bundle, which the test may edit."""
    once, _ = promoted_once
    return dataclasses.replace(once, bundle_dir=shutil.copytree(once.bundle_dir, tmp_path / "bundle"))


def manifest_of(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))


def test_the_bundle_carries_the_reference_images_the_sweep_sent(
    promoted: Promoted, promoted_once: tuple[Promoted, str]
) -> None:
    _, tracking = promoted_once
    bundle = load_bundle(promoted.bundle_dir)
    references = bundle.prompt.references

    assert len(references) == N_REFERENCES
    for request in promoted.requests:  # the very bytes, in the order the model saw them
        assert list(request.image_sha256s[:-1]) == [r.image.sha256 for r in references]
    manifest = manifest_of(promoted.bundle_dir)
    assert manifest["format_version"] == FORMAT_VERSION
    for entry, reference in zip(manifest["references"], references, strict=True):
        path = promoted.bundle_dir / "references" / entry["file"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == reference.image.sha256
        assert (entry["id"], tuple(entry["categories"]), entry["grade"]) == (
            reference.id,
            reference.categories,
            reference.grade,
        )
        # drawn from the train split: the tray's file (what a release would freeze), else split:id
        assert entry["mime_type"] == "image/jpeg" and entry["source"] in (
            str(ROOT / "data" / "sample" / "images" / f"{reference.id}.jpg"),
            f"train:{reference.id}",
        )
    assert sorted(p.name for p in (promoted.bundle_dir / "references").iterdir()) == sorted(
        e["file"] for e in manifest["references"]
    )

    # the manifest's sha256 is the measured version's: its text and its references
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    run = client.get_run(bundle.manifest.provenance.run_id or "")
    assert bundle.manifest.prompt.sha256 == run.data.params["prompt_sha256"] == bundle.prompt.sha256
    assert bundle.prompt.sha256 != bundle.prompt.text_sha256
    production = client.get_prompt_version_by_alias("meal_tray_anchors", "production")
    assert production.template == bundle.prompt.text  # the registry holds the text; the run, the images
    assert bundle.render().n_images == N_REFERENCES + 1


def tamper_image(bundle_dir: Path, index: int) -> Path:
    entry = manifest_of(bundle_dir)["references"][index]
    path = bundle_dir / "references" / entry["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the scan: still a JPEG, not the one measured
    path.write_bytes(bytes(data))
    return path


def test_a_changed_reference_image_is_refused_naming_the_file(promoted: Promoted) -> None:
    path = tamper_image(promoted.bundle_dir, 2)

    with pytest.raises(ConfigError) as refused:
        load_bundle(promoted.bundle_dir)

    assert refused.value.path == str(path)
    assert "changed after it was recorded" in str(refused.value)
    assert "the bundle was edited after promotion; promote again" in str(refused.value)


def test_a_missing_reference_image_is_refused_naming_the_file(promoted: Promoted) -> None:
    entry = manifest_of(promoted.bundle_dir)["references"][0]
    path = promoted.bundle_dir / "references" / entry["file"]
    path.unlink()

    with pytest.raises(ConfigError, match=f"reference image of {entry['id']} is missing") as refused:
        load_bundle(promoted.bundle_dir)
    assert refused.value.path == str(path)


def test_a_relabelled_reference_is_refused_by_the_prompt_sha256(promoted: Promoted) -> None:
    """The image is intact, but the model would be told another grade than the one measured."""
    manifest = manifest_of(promoted.bundle_dir)
    manifest["references"][0]["grade"] = 90.0
    (promoted.bundle_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    with pytest.raises(ConfigError, match=r"prompt \(template and references\) sha256 .* does not match"):
        load_bundle(promoted.bundle_dir)


def test_promotion_refuses_a_run_whose_logged_reference_image_changed(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str
) -> None:
    """The bundle is written from the run's artifacts: an artifact that no longer matches its record
    (here, edited in the artifact store) stops the promotion instead of shipping unmeasured bytes.
    A sweep of its own: it edits the artifact store."""
    promoted = sweep_and_promote(tmp_path, gemini_server, tracking)
    store = RunStore("anchors", tracking)
    run_id = load_bundle(promoted.bundle_dir).manifest.provenance.run_id or ""
    folder = store.artifact_file(run_id, "references")
    assert folder is not None
    record = json.loads((folder / "references.json").read_text(encoding="utf-8"))["references"][1]
    artifact = Path(store.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    (artifact / "references" / record["file"]).write_bytes(b"\xff\xd8 not the image sent")

    with pytest.raises(TrackingError, match=f"run {run_id}: reference image of {record['id']} changed"):
        store.references(run_id)
    again = promote(tracking, tmp_path / "again")
    assert again.exit_code == 2, again.output
    assert "changed after it was recorded" in " ".join(again.output.split())
    assert not (tmp_path / "again").exists()
