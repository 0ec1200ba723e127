"""Prepared images live in a temporary file, not in memory, and read back exactly as prepared."""

from __future__ import annotations

import pickle
from pathlib import Path

from promptgrade.data.examples import PreparedImages, StoredImage
from promptgrade.providers.base import ImageInput


def test_stored_images_read_back_byte_for_byte_and_behave_as_image_inputs() -> None:
    store = PreparedImages()
    originals = [ImageInput(bytes([i]) * (1000 + i), "image/jpeg") for i in range(50)]
    stored = [store.add(image) for image in originals]
    assert len(store) == sum(len(i.data) for i in originals)
    for original, kept in zip(originals, stored, strict=True):
        assert isinstance(kept, StoredImage) and isinstance(kept, ImageInput)
        assert kept.data == original.data
        assert kept.sha256 == original.sha256 and kept.mime_type == "image/jpeg"
        assert kept == original and hash(kept) == hash(original)
    copy = pickle.loads(pickle.dumps(stored[7]))
    assert type(copy) is ImageInput and copy == originals[7]
    assert "bytes=1007" in repr(stored[7]) and "\\x07" not in repr(stored[7])  # no image bytes in logs


def test_a_loaded_dataset_keeps_its_images_out_of_memory() -> None:
    from promptgrade.data.config import FolderDatasetConfig
    from promptgrade.data.loaders import load_dataset_split
    from promptgrade.images import prepare_image
    from promptgrade.task import load_task

    root = Path(__file__).resolve().parents[2]
    task = load_task(root / "experiments/tasks/meal_tray.yaml")
    config = FolderDatasetConfig(
        kind="folder", path=root / "data/sample", split="test", limit=5, image_max_side=128
    )
    dataset = load_dataset_split(config, task, root)
    assert all(isinstance(e.image, StoredImage) for e in dataset.examples)
    first = dataset.examples[0]
    again = prepare_image((root / "data/sample/images" / f"{first.id}.jpg").read_bytes(), max_side=128)
    assert first.image.data == again.data and first.image.sha256 == again.sha256
