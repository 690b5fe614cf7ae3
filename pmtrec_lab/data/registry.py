"""Dataset registry: names, release files, where releases come from, default preprocessing and tasks.

Relation and label names used across the project (graphs, tasks, configs):

| dataset | user relations | item relations | labels (side, kind) |
| --- | --- | --- | --- |
| ciao, epinions | trust | | category (item, single) |
| lastfm | friends | | tag (item, multi, top 100 after filtering) |
| amazon | | coview | category (item, multi), brand (item, single) |
| yelp | friends | | category (item, multi), city (item, single), compliment (user, multi) |
| filmtrust | trust | | |
| ml-100k | | kg | genre (item, multi), occupation (user, single), age (user, single) |
| synthetic | friends | | category (item, single), community (user, single) |
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmtrec_lab.data.types import RawDataset


@dataclass(frozen=True)
class TaskDefault:
    """A default auxiliary task: type, data source (relation or label name), enabled by default."""

    type: str  # social | item_item | item_label | user_label
    source: str
    enabled: bool = True

    @property
    def name(self) -> str:
        return f"{self.type}:{self.source}"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: str  # "module:function", called as fn(root: Path, **loader_args) -> RawDataset
    files: tuple[str, ...]  # release files required under <data-dir>/<name>/
    source: str  # where the release can be obtained
    k_core: int = 5
    rating_threshold: float | None = None
    tasks: tuple[TaskDefault, ...] = ()
    embedded: bool = False  # fetched into the cache by the project itself (ml-100k)
    generated: bool = False  # produced by a generator (synthetic); no files
    loader_args: dict[str, Any] = field(default_factory=dict)

    def load_function(self) -> Callable[..., RawDataset]:
        module, _, fn = self.loader.partition(":")
        return getattr(importlib.import_module(module), fn)


_SOCIAL_TRUST = TaskDefault("social", "trust")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="ml-100k",
            loader="pmtrec_lab.data.sources.ml100k:load_raw",
            files=("ml-100k.inter", "ml-100k.user", "ml-100k.item", "ml-100k.kg", "ml-100k.link"),
            source="MovieLens-100k as shipped inside the recbole==1.2.1 wheel on PyPI "
            "(recbole/dataset_example/ml-100k/); extracted automatically into the cache",
            tasks=(
                TaskDefault("item_label", "genre"),
                TaskDefault("user_label", "occupation"),
                TaskDefault("user_label", "age"),
                TaskDefault("item_item", "kg"),
            ),
            embedded=True,
        ),
        DatasetSpec(
            name="ciao",
            loader="pmtrec_lab.data.sources.ciao:load_raw",
            files=("rating.mat", "trustnetwork.mat"),
            source="Ciao (Tang et al., mTrust WSDM'12 / eTrust KDD'12), "
            "https://www.cse.msu.edu/~tangjili/datasetcode/truststudy.htm",
            tasks=(_SOCIAL_TRUST, TaskDefault("item_label", "category")),
        ),
        DatasetSpec(
            name="epinions",
            loader="pmtrec_lab.data.sources.ciao:load_raw",
            files=("rating.mat", "trustnetwork.mat"),
            source="Epinions (Tang et al., mTrust WSDM'12 / eTrust KDD'12), "
            "https://www.cse.msu.edu/~tangjili/datasetcode/truststudy.htm",
            tasks=(_SOCIAL_TRUST, TaskDefault("item_label", "category")),
            loader_args={"name": "epinions"},
        ),
        DatasetSpec(
            name="lastfm",
            loader="pmtrec_lab.data.sources.lastfm:load_raw",
            files=("user_artists.dat", "user_friends.dat", "user_taggedartists.dat", "tags.dat"),
            source="hetrec2011-lastfm-2k (HetRec 2011), https://grouplens.org/datasets/hetrec-2011/",
            tasks=(TaskDefault("social", "friends"), TaskDefault("item_label", "tag")),
        ),
        DatasetSpec(
            name="amazon",
            loader="pmtrec_lab.data.sources.amazon:load_raw",
            files=("user_item.dat", "item_view.dat", "item_category.dat", "item_brand.dat"),
            source="Amazon subset of the HIN datasets for recommendation (HERec, Shi et al., TKDE'18), "
            "https://github.com/librahu/HIN-Datasets-for-Recommendation-and-Network-Embedding",
            tasks=(
                TaskDefault("item_item", "coview"),
                TaskDefault("item_label", "category"),
                TaskDefault("item_label", "brand"),
            ),
        ),
        DatasetSpec(
            name="yelp",
            loader="pmtrec_lab.data.sources.yelp:load_raw",
            files=(
                "user_business.dat",
                "user_user.dat",
                "business_category.dat",
                "business_city.dat",
                "user_compliment.dat",
            ),
            source="Yelp subset of the HIN datasets for recommendation (HERec, Shi et al., TKDE'18), "
            "https://github.com/librahu/HIN-Datasets-for-Recommendation-and-Network-Embedding",
            tasks=(
                TaskDefault("social", "friends"),
                TaskDefault("item_label", "category"),
                TaskDefault("item_label", "city"),
                TaskDefault("user_label", "compliment", enabled=False),
            ),
        ),
        DatasetSpec(
            name="filmtrust",
            loader="pmtrec_lab.data.sources.filmtrust:load_raw",
            files=("ratings.txt", "trust.txt"),
            source="FilmTrust (Guo et al., IJCAI'13), https://guoguibing.github.io/librec/datasets.html",
            k_core=2,
            tasks=(_SOCIAL_TRUST,),
        ),
        DatasetSpec(
            name="synthetic",
            loader="pmtrec_lab.data.sources.synthetic:load_raw",
            files=(),
            source="generated by pmtrec_lab.data.sources.synthetic (planted social homophily and "
            "item categories)",
            k_core=2,
            tasks=(
                TaskDefault("social", "friends"),
                TaskDefault("item_label", "category"),
                TaskDefault("user_label", "community", enabled=False),
            ),
            generated=True,
        ),
    ]
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        ) from None


def release_dir(spec: DatasetSpec, data_dir: Path) -> Path:
    return data_dir / spec.name
