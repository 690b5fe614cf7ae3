"""The schema of one auxiliary task of an atomic-file dataset (``data.tasks`` in configuration,
``tasks`` in a folder's ``pmtrec.yaml``): :class:`AtomicTask`, and the check that task names are
unique. Part of the atomic data source (``data.sources.atomic`` reads what it declares), in a
module of its own that imports only ``config`` and ``errors``, so that the dataset registry can
hand it to configuration loading (``registry_checks``) without an import cycle.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, model_validator

from pmtrec_lab.config import StrictSection
from pmtrec_lab.errors import ConfigError

__all__ = ["AtomicTask", "check_atomic_tasks"]

#: The names a relation or label set may take (DGL edge and node types are built from them).
_SOURCE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_RESERVED_NAMES = frozenset({"interacts", "interacted_by"})  # the graph's interaction edge types
_DEFAULT_SOURCE = {"social": "net", "item_item": "kg"}  # label sets default to their field's name


class AtomicTask(StrictSection):
    """One auxiliary task of an atomic-file dataset, declared in configuration: where its data come
    from. The task is named ``<type>:<name>`` (``name`` defaults to the label field, ``net`` for
    ``social`` and ``kg`` for ``item_item``), the name also of its relation or label set.

    - ``item_label`` / ``user_label``: ``field`` of ``.item`` / ``.user``. A ``token`` field gives
      one label per row (softmax), a ``token_seq`` field several (multi-label BCE) unless
      ``single_label`` (each entity's most frequent label, ties to the lower id). ``bins`` (strictly
      increasing edges) cut a numeric field (``float``, ``float_seq`` or numeric tokens) into
      ``len(bins) + 1`` bands, ``bin_names`` naming them; ``top_k`` keeps the k labels used on the
      most entities after filtering.
    - ``social``: the user pairs of ``.net`` (fields ``source_id`` -> ``target_id``), both
      directions added when ``symmetric``.
    - ``item_item``: items sharing a knowledge-graph entity: ``.link`` maps items to entities,
      ``.kg`` triples (``head_id``, ``relation_id``, ``tail_id``) whose head is an item's entity
      and whose relation is in ``relations`` (None: every relation) give the item's tail
      entities; an entity linked to more than ``max_degree`` items is dropped (None: no cap), since
      a hub would link nearly every pair.
    """

    type: Literal["item_label", "user_label", "social", "item_item"]
    name: str | None = None
    enabled: bool = True
    field: str | None = None
    top_k: int | None = Field(default=None, ge=1)
    single_label: bool = False
    bins: list[float] | None = None
    bin_names: list[str] | None = None
    source_id: str = "source_id"
    target_id: str = "target_id"
    symmetric: bool = False
    relations: list[str] | None = None
    max_degree: int | None = Field(default=50, ge=1)
    head_id: str = "head_id"
    relation_id: str = "relation_id"
    tail_id: str = "tail_id"
    entity_id: str = "entity_id"

    @property
    def is_label(self) -> bool:
        return self.type in ("item_label", "user_label")

    def source_name(self) -> str:
        """The relation or label-set name (the task's ``source``)."""
        return self.name or (self.field or "" if self.is_label else _DEFAULT_SOURCE[self.type])

    def task_name(self) -> str:
        return f"{self.type}:{self.source_name()}"

    @model_validator(mode="after")
    def _options_fit_the_type(self) -> AtomicTask:
        what = f"task {self.task_name()!r}"
        if self.is_label:
            if not self.field:
                raise ValueError(f"{what}: a {self.type} task needs field (a .{self.type[:4]} field)")
            misplaced = {
                "symmetric": self.symmetric,
                "relations": self.relations is not None,
            }
        else:
            misplaced = {
                "field": self.field is not None,
                "top_k": self.top_k is not None,
                "single_label": self.single_label,
                "bins": self.bins is not None,
                "bin_names": self.bin_names is not None,
            }
            if self.type == "social":
                misplaced["relations"] = self.relations is not None
            else:
                misplaced["symmetric"] = self.symmetric
        given = [k for k, v in misplaced.items() if v]
        if given:
            raise ValueError(f"{what}: {', '.join(given)} do(es) not apply to a {self.type} task")
        name = self.source_name()
        if not _SOURCE_NAME.fullmatch(name) or name in _RESERVED_NAMES:
            raise ValueError(
                f"{what}: name {name!r} must be letters, digits, '_', '.' or '-' (not starting with "
                f"'.' or '-') and not {' or '.join(sorted(_RESERVED_NAMES))}"
            )
        if self.bins is not None:
            edges = self.bins
            if not edges or any(not math.isfinite(b) for b in edges):
                raise ValueError(f"{what}: bins must be a non-empty list of finite numbers, got {edges}")
            if any(b >= a for b, a in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"{what}: bins must be strictly increasing, got {edges}")
        if self.bin_names is not None:
            if self.bins is None:
                raise ValueError(f"{what}: bin_names needs bins")
            if len(self.bin_names) != len(self.bins) + 1 or len(set(self.bin_names)) != len(self.bin_names):
                raise ValueError(
                    f"{what}: bin_names must be {len(self.bins) + 1} distinct names (one per band of "
                    f"bins={self.bins}), got {self.bin_names}"
                )
        if self.relations is not None and not self.relations:
            raise ValueError(f"{what}: relations must list at least one relation (None: every relation)")
        return self


def check_atomic_tasks(tasks: list[AtomicTask], where: str) -> None:
    """Task names must be unique: each is the name of a relation or label set of the dataset."""
    names = [t.source_name() for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: two tasks share the name(s) {dup}; give each a distinct name")
