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
| atomic | declared | declared | declared (``data.tasks`` or the folder's ``pmtrec.yaml``) |

``atomic`` is a folder dataset: its release is the folder ``data.path`` names, and its tasks are
declared in configuration (``data.sources.atomic.AtomicTask``), so ``spec_for_data`` (not ``get_spec``) gives
its task list. ml-100k is stored in the same format: its loader is ``atomic`` plus the
declarations ``ML100K_TASKS``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmtrec_lab.data.types import RawDataset
from pmtrec_lab.registry_checks import register as register_checks


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
    folder: bool = False  # the release is the folder data.path names (atomic); tasks declared
    #: task declarations (``data.sources.atomic.AtomicTask`` fields) of a dataset stored as atomic files
    atomic_tasks: tuple[Mapping[str, Any], ...] = ()

    def load_function(self) -> Callable[..., RawDataset]:
        module, _, fn = self.loader.partition(":")
        return getattr(importlib.import_module(module), fn)


_SOCIAL_TRUST = TaskDefault("social", "trust")

#: ml-100k's tasks as atomic-file declarations (its loader is ``atomic`` plus these): genres from
#: ``.item``'s ``class:token_seq`` (multi-label), occupation and age band (the ML-1M bands) from
#: ``.user``, and items sharing a knowledge-graph entity through the film relations below; genre,
#: language, country, content-rating and award relations link nearly every pair and are left out.
ML100K_TASKS: tuple[dict[str, Any], ...] = (
    {"type": "item_label", "name": "genre", "field": "class"},
    {"type": "user_label", "name": "occupation", "field": "occupation"},
    {
        "type": "user_label",
        "name": "age",
        "field": "age",
        "bins": [18, 25, 35, 45, 50, 56],
        "bin_names": ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"],
    },
    {
        "type": "item_item",
        "name": "kg",
        "relations": [
            "film.film.actor",
            "film.film.directed_by",
            "film.film.written_by",
            "film.film.produced_by",
            "film.film.cinematography",
            "film.film.production_companies",
            "film.film.subjects",
            "film.film.sequel",
            "film.film.prequel",
        ],
        "max_degree": 50,
    },
)


def declared_task_defaults(declarations: tuple[Mapping[str, Any], ...]) -> tuple[TaskDefault, ...]:
    """The default tasks of plain-data declarations, each with an explicit ``name``."""
    return tuple(TaskDefault(d["type"], d["name"], bool(d.get("enabled", True))) for d in declarations)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="ml-100k",
            loader="pmtrec_lab.data.sources.ml100k:load_raw",
            files=("ml-100k.inter", "ml-100k.user", "ml-100k.item", "ml-100k.kg", "ml-100k.link"),
            source="MovieLens-100k as shipped inside the recbole==1.2.1 wheel on PyPI "
            "(recbole/dataset_example/ml-100k/); extracted automatically into the cache",
            tasks=declared_task_defaults(ML100K_TASKS),
            embedded=True,
            atomic_tasks=ML100K_TASKS,
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
        DatasetSpec(
            name="atomic",
            loader="pmtrec_lab.data.sources.atomic:load_raw",
            files=(),
            source="any folder of RecBole atomic files (<stem>.inter and optionally .user, .item, .net, "
            ".kg, .link; RecBole, Zhao et al., CIKM'21; the RecSysDatasets collection), named by "
            "data.path",
            folder=True,
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


def spec_for_data(data: Any) -> DatasetSpec:
    """The spec a run's ``data`` section (a ``config.DataConfig``) stands for.

    A registered dataset's own spec; for a folder dataset (``atomic``) that spec with the folder's
    declared tasks (``data.tasks``, else the folder's ``pmtrec.yaml``, else the tasks its files
    offer, off) and its files and default k-core. Reads the folder's headers and ``pmtrec.yaml``
    only; ``MissingDataError`` when the folder or its interaction file is missing.
    """
    spec = get_spec(data.name)
    if not spec.folder:
        return spec
    from pmtrec_lab.data.atomic_files import folder_files

    settings = data.atomic_settings()
    return dataclasses.replace(
        spec,
        files=tuple(p.name for p in folder_files(settings.folder).values()),
        k_core=settings.k_core or spec.k_core,
        tasks=tuple(TaskDefault(t.type, t.source_name(), t.enabled) for t in settings.tasks),
    )


def _atomic_settings(data: Any) -> Any:
    from pmtrec_lab.data.atomic_settings import atomic_settings

    return atomic_settings(data)


def _atomic_task_class() -> type:
    """The schema of one ``data.tasks`` declaration (``AtomicTask``, the atomic source's)."""
    from pmtrec_lab.data.sources.atomic_tasks import AtomicTask

    return AtomicTask


def _check_atomic_tasks(tasks: list[Any], where: str) -> None:
    """Task names must be unique (``data.sources.atomic.check_atomic_tasks``)."""
    from pmtrec_lab.data.sources.atomic_tasks import check_atomic_tasks

    check_atomic_tasks(tasks, where)


# config's checks (registry_checks): a configuration's dataset, its tasks and its folder
register_checks(
    "dataset",
    find=DATASETS.get,
    get_spec=get_spec,
    spec_for_data=spec_for_data,
    atomic_settings=_atomic_settings,
    atomic_task_class=_atomic_task_class,
    check_atomic_tasks=_check_atomic_tasks,
)
