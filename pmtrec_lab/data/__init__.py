"""Datasets: loaders (``sources``), registry, preprocessing, split, graphs."""

from pmtrec_lab.data.loading import dataset_for_config, dataset_info, load_dataset, load_raw
from pmtrec_lab.data.registry import DATASETS, DatasetSpec, get_spec
from pmtrec_lab.data.types import LabelSet, RawDataset, RawLabels, RecDataset, Relation, Split

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "LabelSet",
    "RawDataset",
    "RawLabels",
    "RecDataset",
    "Relation",
    "Split",
    "dataset_for_config",
    "dataset_info",
    "get_spec",
    "load_dataset",
    "load_raw",
]
