"""Labelled image datasets: configured in an experiment's ``dataset:`` section, loaded one split at a time.

Lab code: it may import `datasets` and boto3 (lazily, per source kind). The Lambda never imports it.
"""

from promptgrade.data.config import (
    DatasetConfig,
    FolderDatasetConfig,
    HFDatasetConfig,
    ParquetDatasetConfig,
    S3DatasetConfig,
)
from promptgrade.data.examples import Example, Labels, LoadedDataset, SkippedExample, dataset_sha256
from promptgrade.data.loaders import default_cache_dir, load_dataset_split

__all__ = [
    "DatasetConfig",
    "Example",
    "FolderDatasetConfig",
    "HFDatasetConfig",
    "Labels",
    "LoadedDataset",
    "ParquetDatasetConfig",
    "S3DatasetConfig",
    "SkippedExample",
    "dataset_sha256",
    "default_cache_dir",
    "load_dataset_split",
]
