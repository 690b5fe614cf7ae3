"""One validated run configuration (pydantic), loadable from YAML or a dict, with ``--set`` overrides.

Layers, later wins: defaults here < a YAML file < ``--set a.b=c`` overrides (values parsed as
YAML, so ``method.params.tau=.inf`` and ``tasks.include=[social:trust]`` work). An unknown or
ill-typed key is an error naming it.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from pmtrec_lab.errors import ConfigError, format_validation_errors
from pmtrec_lab.registry_checks import checks
from pmtrec_lab.yaml_files import load_yaml_text, read_yaml_file

if TYPE_CHECKING:
    from pmtrec_lab.mtl.params import MethodParams


def _bool_where_number(value: Any, annotation: Any) -> bool:
    """True if ``value`` holds a boolean where ``annotation`` expects a number and no boolean.

    Why: pydantic's lax mode reads ``true`` as 1 for an ``int`` or ``float`` field, so
    ``optim.epochs=true`` trained one epoch and ``seed=false`` seed 0. Numeric strings (YAML 1.1
    reads ``1e-3`` as one) stay accepted: only booleans are refused."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _bool_where_number(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return bool not in args and any(_bool_where_number(value, a) for a in args)
    if isinstance(value, bool):
        return annotation in (int, float)
    if origin is list and isinstance(value, list) and args:
        return any(_bool_where_number(v, args[0]) for v in value)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_bool_where_number(v, args[1]) for v in value.values())
    return False


class _Strict(BaseModel):
    """A configuration section: unknown keys and booleans given for numbers are errors.

    Schemas are built when a section is first validated (``defer_build``), not when this module
    is imported: ``DataConfig.tasks`` takes its item schema from the dataset registry, which
    imports this module."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_where_number(value, field.annotation):
            raise PydanticCustomError("bool_for_number", "expected a number, not a boolean")
        return value


#: the base of the configuration's sections, for a section schema defined beside its owner
#: (``data.sources.atomic.AtomicTask``): strict, unknown keys refused
StrictSection = _Strict


class AtomicFields(_Strict):
    """Field names of an atomic dataset's interaction file, RecBole's defaults. The user and item
    fields also name the id field of ``.user`` and ``.item`` (and ``.link``'s item field).
    ``rating`` and ``time`` are optional in the file under their default names; under another name
    a missing field is an error (a typo would silently drop the ratings)."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str = "rating"
    time: str = "timestamp"


def _atomic_task_schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    """The schema of one atomic task declaration: ``AtomicTask``'s, the class the dataset
    registry provides (it lives with the atomic data source, above this layer), asked for when a
    configuration is first validated (sections build their schemas then: ``defer_build``)."""
    return handler(checks("dataset").atomic_task_class())


#: one atomic task declaration (``pmtrec_lab.data.sources.atomic.AtomicTask``), referenced
#: through the dataset registry's check so that ``config`` imports nothing of ``data``
AtomicTaskDeclaration = Annotated[Any, GetPydanticSchema(_atomic_task_schema)]


#: ``data.aux_holdout``'s default: 10% of each auxiliary relation and label set held out (5%
#: validation, 5% test), enough held-out links and labels to score every default task
DEFAULT_AUX_HOLDOUT = 0.1


class DataConfig(_Strict):
    name: str = "ml-100k"
    data_dir: str | None = None  # None: PMTREC_DATA_DIR, then the default cache location
    #: ``atomic`` only: the folder holding ``<folder name>.inter`` and whichever of ``.user``,
    #: ``.item``, ``.net``, ``.kg``, ``.link`` exist; a relative path is taken under the data directory
    path: str | None = None
    #: ``atomic`` only: field names of the interaction file; None: the folder's ``pmtrec.yaml``, else
    #: RecBole's defaults
    fields: AtomicFields | None = None
    #: ``atomic`` only: the auxiliary tasks and where their data come from; None: the folder's
    #: ``pmtrec.yaml``, else every task the files offer, each off by default (``tasks.include``)
    tasks: list[AtomicTaskDeclaration] | None = None
    k_core: int | None = Field(default=None, ge=1)  # None: the dataset's default
    rating_threshold: float | None = None
    split_seed: int = 0
    #: PMTRec v3's meta split: one training pair per user with at least 5 training pairs held out
    #: of training (for every method, so comparisons stay fair), masked at evaluation like
    #: training pairs and never sampled as a negative; its loss is the usefulness signal of
    #: methods that read it (``pmtrec`` with ``usefulness``). Validation and test are unchanged.
    meta_split: bool = False
    #: auxiliary-task evaluation (``data/aux_holdout.py``): this share of each auxiliary relation
    #: (its undirected pairs) and label set (its entities) held out of training, drawn once with
    #: ``split_seed``, half validation and half test, and scored by the task's own head. On by
    #: default (0.1) since the verdict grids were committed; 0 or None: off (read as None, and out
    #: of the data fingerprint, so runs without it keep theirs). Committed grids pin it off.
    aux_holdout: float | None = DEFAULT_AUX_HOLDOUT
    loader_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("aux_holdout")
    @classmethod
    def _aux_holdout_share(cls, value: float | None) -> float | None:
        """A share in [0, 1): holding out everything would leave the task nothing to train on."""
        if value is not None and not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise ConfigError(
                f"data.aux_holdout must be a share in [0, 1) of each auxiliary relation or label set "
                f"to hold out (0 or null: off), got {value}"
            )
        return value or None  # off has one form, so two configurations that mean off compare equal

    @model_validator(mode="after")
    def _folder_settings(self) -> DataConfig:
        """``path``, ``fields`` and ``tasks`` belong to folder datasets (``atomic``), which need a path."""
        spec = checks("dataset").find(self.name)
        if spec is None:
            return self  # RunConfig names the unknown dataset
        if spec.folder and not self.path:
            raise ConfigError(
                f"data.path: data.name={self.name} reads the folder data.path names (holding "
                "<folder name>.inter and optionally .user, .item, .net, .kg, .link); none given"
            )
        given = [k for k in ("path", "fields", "tasks") if getattr(self, k) is not None]
        if not spec.folder and given:
            raise ConfigError(
                f"data.{given[0]}: only for folder datasets (data.name=atomic), not {self.name!r}"
            )
        if self.tasks is not None:
            checks("dataset").check_atomic_tasks(self.tasks, "data.tasks")
        check_loader_args(spec, self.loader_args)
        return self

    def folder(self) -> Path:
        """The folder ``path`` names: as given when absolute, else under the data directory."""
        from pmtrec_lab.paths import data_dir

        if not self.path:
            raise ConfigError(f"data.path: not set (data.name={self.name})")
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else data_dir(self.data_dir) / path

    def atomic_settings(self) -> Any:
        """The folder's fields, tasks and default k-core (``data.atomic_settings.AtomicSettings``):
        this configuration's, else the folder's ``pmtrec.yaml``'s, else RecBole's default fields and
        every task the files offer (off); read by the dataset registry's check."""
        return checks("dataset").atomic_settings(self)


def check_loader_args(spec: Any, args: dict[str, Any]) -> None:
    """``data.loader_args`` against the keyword arguments of the dataset's loader (``load_raw``),
    when the configuration loads: a key it does not take (or one pmtrec-lab sets itself: the
    release folder, a folder dataset's fields and tasks, the registry's own arguments) is a
    ``ConfigError`` naming it and what the loader takes, and so is a boolean where the loader's
    default is a number. Why here: the loader is called only once the run folder exists, so a
    typo was found after ``config.yaml`` and ``status.json`` had been written."""
    if not args:
        return
    try:
        params = inspect.signature(spec.load_function()).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return  # a plug-in loader that cannot be inspected: it reports bad arguments itself
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    positional = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    set_by_tool = {*positional[:1], *spec.loader_args, *(("fields", "tasks") if spec.folder else ())}
    takes = [n for n in positional if n not in set_by_tool]
    unknown = [k for k in args if k not in takes]
    where = f"data.loader_args: dataset {spec.name!r} ({spec.loader})"
    if unknown:
        hints = [repr(m[0]) for k in unknown if (m := difflib.get_close_matches(k, takes, 1))]
        raise ConfigError(
            f"{where} takes no argument {', '.join(map(repr, unknown))}"
            + (f" (did you mean {' or '.join(hints)}?)" if hints else "")
            + f"; its loader takes {', '.join(takes) if takes else 'none'}"
        )
    for key, value in args.items():
        default = params[key].default
        number = isinstance(default, int | float) and not isinstance(default, bool)
        if number and isinstance(value, bool):
            raise ConfigError(
                f"data.loader_args.{key}: expected a number (default {default!r}), got a boolean ({value})"
            )


#: The embedding width when ``encoder.dim`` is not given: the one owner of this default (the
#: comparison grid, the benchmarks and the report notebooks read it from here). Every committed
#: result was run at 64 (``results/grid.yaml``, ``results/tuning.yaml``).
DEFAULT_DIM = 64


class EncoderConfig(_Strict):
    #: a registered encoder (``pmtrec_lab.encoders.encoder_names()``: built-ins, entry points,
    #: and any module that calls ``register_encoder``)
    name: str = "mf"
    dim: int = Field(default=DEFAULT_DIM, ge=1)
    num_layers: int = Field(default=3, ge=0)
    propagation: Literal["auto", "dgl", "sparse"] = "auto"
    #: relation/label name -> fraction of its rows used for message passing (the task trains on
    #: the rest); relations predicted by an active task and not listed here are left out.
    split_relations: dict[str, float] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _registered_encoder(cls, v: str) -> str:
        known = checks("encoder").names()
        if v not in known:
            raise ConfigError(f"encoder.name: unknown encoder {v!r}; known encoders: {', '.join(known)}")
        return v


class TaskConfig(_Strict):
    type: Literal["rec", "social", "item_item", "item_label", "user_label"]
    source: str
    name: str | None = None
    #: auto: BPR for rec/social/item_item; softmax cross-entropy for single-label sets, binary
    #: cross-entropy for multi-label sets. "bce" on a single-label set treats it as one-hot.
    loss: Literal["auto", "bpr", "softmax", "bce"] = "auto"
    batch_size: int | None = Field(default=None, ge=1)  # None: cover the data once per epoch
    reject_observed: bool = True

    def resolved_name(self) -> str:
        return self.name or ("rec" if self.type == "rec" else f"{self.type}:{self.source}")


class TasksConfig(_Strict):
    #: names of the dataset's default auxiliary tasks to use ("social:trust", ...); None: the
    #: dataset's defaults that are enabled; [] trains the main task only.
    include: list[str] | None = None
    #: extra tasks beyond the dataset defaults
    custom: list[TaskConfig] = Field(default_factory=list)


class MethodConfig(_Strict):
    """The weighting method and the parameters given for it (the rest take the method's defaults).

    Both are checked here, when the configuration loads, against the method's registry entry and
    its typed parameter class (``pmtrec_lab.mtl.params``): a bad name or value fails before any
    data is read or file written, naming ``method.name`` or ``method.params.<field>`` and the
    bound. Old spellings are converted with a notice (``tau: .inf`` -> ``weight_mode: uniform``).

    ``params`` keeps the given parameters (in today's spelling); :attr:`resolved` is the typed
    ``MethodParams`` instance the method runs with (defaults < preset < given), resolved once, at
    load, and read by every consumer (the trainer, the run cache, ``config.yaml``), so that no
    one downstream resolves the raw dict again.
    """

    name: str = "ew"
    params: dict[str, Any] = Field(default_factory=dict)
    _resolved: Any = PrivateAttr(default=None)
    #: the (name, given parameters) ``_resolved`` was resolved from
    _resolved_from: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _known_method_and_upgraded_params(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from pmtrec_lab.mtl import get_entry, upgrade_params

        name = data.get("name", "ew")
        params = data.get("params") or {}
        if not isinstance(name, str) or not isinstance(params, dict):
            return data  # the field types report it
        try:
            get_entry(name)
        except ValueError as exc:
            raise ConfigError(f"method.name: {exc}") from None
        return {**data, "params": upgrade_params(name, params)}

    @model_validator(mode="after")
    def _resolve_params(self) -> MethodConfig:
        self._resolve(upgraded=True)  # MethodParamsError (a ConfigError) names the field
        return self

    def _resolve(self, upgraded: bool) -> None:
        from pmtrec_lab.mtl import typed_params, upgrade_params

        given = self.params if upgraded else upgrade_params(self.name, self.params)
        self._resolved = typed_params(self.name, given)
        self._resolved_from = (self.name, copy.deepcopy(self.params))

    @property
    def resolved(self) -> MethodParams:
        """The typed parameters the method runs with (defaults < preset < given), resolved at load.

        A copy made without validation (``model_copy(update=...)``, ``model_construct``) or a
        ``params`` changed in place no longer matches what was resolved: then the current name
        and parameters are resolved (old spellings converted, as at load), never stale ones."""
        if self._resolved is None or self._resolved_from != (self.name, self.params):
            self._resolve(upgraded=False)
        return self._resolved

    def resolved_dict(self) -> dict[str, Any]:
        """:attr:`resolved` as a plain mapping (JSON-ready): what ``config.yaml`` records."""
        return self.resolved.as_dict()


#: The default Adam learning rate (``optim.lr``), the one owner of it. Why 1e-3: the comparison
#: grid (``results/grid.yaml``: MF, dim 64, up to 100 epochs, patience 5) chose the learning rate
#: per (dataset, method) among 1e-3 and 3e-3 on seed-0 validation NDCG@20, and 1e-3 won 51 of
#: the 63 choices (ciao 20/21, lastfm 18/21, amazon 13/21; ``results/grid/lr_choice.csv``).
DEFAULT_LR = 1e-3
#: The learning rate of short runs: the report notebooks' default (15 epochs). Why 3e-3: in 15
#: epochs 1e-3 is far from converged (in the grid's seed-0 runs its best validation epoch is at
#: median 77, 3e-3's at 25), and in every one of those 63 (dataset, method) pairs 3e-3 reached the
#: higher validation NDCG@20 within the first 15 epochs (median +43%). The one-seed tuning study
#: (``results/tuning.yaml``) and ``results/reference`` also ran at 3e-3.
SHORT_RUN_LR = 3e-3


class OptimConfig(_Strict):
    #: a positive finite number (checked at load, as the grid's ``lrs``: ``inf`` passed ``> 0``
    #: and the run diverged at its first step, after its folder was written)
    lr: float = DEFAULT_LR
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    #: on the batch's layer-0 rows, outside the combination
    l2: float = Field(default=1e-4, ge=0, allow_inf_nan=False)
    batch_size: int = Field(default=2048, ge=1)  # main task
    epochs: int = Field(default=100, ge=1)
    #: MF only: the embedding tables give sparse gradients (just the step's rows) and are updated
    #: by ``torch.optim.SparseAdam``, the task heads by Adam. Lazy Adam: rows not in a step keep
    #: their values and their moments (dense Adam keeps moving them with stale momentum), so the
    #: result differs from dense Adam's; an epoch then costs the rows touched, not steps x table
    #: size. Needs ``encoder.name: mf`` and ``weight_decay: 0`` (``l2`` is fine).
    sparse: bool = False
    #: ``adam``: torch's Adam over every parameter (the default; every committed result). ``lazy_adam``
    #: (MF only, opt-in until the PMTRec v3 grid is done): the tables give sparse gradients and a
    #: step updates just the rows it touched, each bias-corrected by its own step count
    #: (``pmtrec_lab.train.lazy_adam``); the task heads keep Adam. An epoch then costs the rows it
    #: touches. Not with ``sparse: true`` (that is SparseAdam, another lazy Adam).
    optimizer: Literal["adam", "lazy_adam"] = "adam"
    #: ``analytic`` (the default since the verdict grids were committed): closed-form gradients
    #: for the BPR link tasks and the label heads (``Task.loss_and_grads``), equal to autograd's up
    #: to float rounding (not bit for bit), cheaper per step. ``autograd``: each task's gradient
    #: per touched row through autograd (the reference; every result committed before the switch,
    #: whose grid files pin it).
    task_gradients: Literal["autograd", "analytic"] = "analytic"

    @field_validator("lr")
    @classmethod
    def _positive_finite_lr(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise PydanticCustomError("learning_rate", "expected a positive finite learning rate")
        return v


class EvalConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    every: int = Field(default=1, ge=1)
    patience: int = Field(default=5, ge=1)
    metric: str = "ndcg@20"
    chunk_users: int | None = Field(default=None, ge=1)

    @field_validator("ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(v))


class DiagnosticsConfig(_Strict):
    enabled: bool = True
    #: epochs (counted from 1, as everywhere) at which per-entity task weights are stored;
    #: None: 1, 2, 3, 5, 9, ... and the last
    weight_epochs: list[int] | None = None
    max_entities: int = Field(default=5000, ge=1)  # per side; beyond it a seeded cohort
    cosine_bins: int = Field(default=40, ge=4)


class RunConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    seed: int = 0
    device: str = "cpu"
    progress: Literal["auto", "bar", "log", "none"] = "auto"

    @field_validator("device")
    @classmethod
    def _torch_device(cls, v: str) -> str:
        import torch  # here: configuration loading needs torch only for this check

        try:
            torch.device(v)
        except RuntimeError:
            raise ConfigError(f"device: {v!r} is not a torch device; e.g. cpu, cuda, cuda:1") from None
        return v

    @model_validator(mode="after")
    def _settings_agree(self) -> RunConfig:
        """Checks across sections, at load, so that no setting fails only inside the epoch loop:
        the dataset is registered, ``tasks.include`` names its tasks, ``eval.metric`` is one the
        evaluation computes for ``eval.ks``, ``diagnostics.weight_epochs`` lie in the run."""
        from pmtrec_lab.eval.metrics import metric_keys

        datasets = checks("dataset")
        try:
            spec = datasets.get_spec(self.data.name)
        except ValueError as exc:
            raise ConfigError(f"data.name: {exc}") from None
        if spec.folder and self.tasks.include:
            spec = datasets.spec_for_data(self.data)  # a folder dataset's tasks are its declarations
        defaults = sorted(t.name for t in spec.tasks)
        unknown = [n for n in self.tasks.include or [] if n not in defaults]
        if unknown:
            raise ConfigError(
                f"tasks.include: unknown task(s) {unknown} for dataset {spec.name!r}; available: {defaults}"
            )
        known = metric_keys(self.eval.ks)
        if self.eval.metric not in known:
            raise ConfigError(
                f"eval.metric: {self.eval.metric!r} is not computed with eval.ks={self.eval.ks}; "
                f"choose one of {', '.join(known)} or add its cutoff to eval.ks"
            )
        outside = [e for e in self.diagnostics.weight_epochs or [] if not 1 <= e <= self.optim.epochs]
        if outside:
            raise ConfigError(
                f"diagnostics.weight_epochs: {outside} outside 1..optim.epochs={self.optim.epochs} "
                "(epochs are counted from 1)"
            )
        return self

    @model_validator(mode="after")
    def _sparse_needs_mf(self) -> RunConfig:
        lazy = self.optim.optimizer == "lazy_adam"
        if lazy and self.optim.sparse:
            raise ValueError(
                "optim.optimizer=lazy_adam and optim.sparse=true name two lazy optimizers "
                "(lazy Adam and SparseAdam); choose one"
            )
        if lazy:
            classes, names = checks("encoder").classes, checks("encoder").names
            if not classes[self.encoder.name].supports_sparse:
                able = "|".join(n for n in names() if classes[n].supports_sparse)
                raise ValueError(
                    f"optim.optimizer=lazy_adam needs encoder.name={able} (got {self.encoder.name!r}): "
                    "graph encoders propagate over the whole tables, so every row has a gradient"
                )
        if self.optim.sparse:
            classes, names = checks("encoder").classes, checks("encoder").names
            if not classes[self.encoder.name].supports_sparse:
                able = "|".join(n for n in names() if classes[n].supports_sparse)
                raise ValueError(
                    f"optim.sparse=true needs encoder.name={able} (got {self.encoder.name!r}): graph "
                    "encoders propagate over the whole tables, so their gradients are dense"
                )
            if self.optim.weight_decay > 0:
                raise ValueError(
                    f"optim.sparse=true needs optim.weight_decay=0 (got {self.optim.weight_decay}): "
                    "SparseAdam has no weight decay; use optim.l2, which acts on the step's rows"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def updated(self, changes: dict[str, Any]) -> RunConfig:
        """A validated copy with ``changes`` (a nested dict) merged in."""
        try:
            return RunConfig.model_validate(_deep_merge(self.to_dict(), changes))
        except ValidationError as err:
            raise ConfigError(f"invalid configuration: {format_validation_errors(err)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], yaml-parsed c)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. method.params.tau=0.5")
    parsed = load_yaml_text(value, f"override {item!r}: the value") if value.strip() else None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Build a validated RunConfig from a YAML file and/or a dict, then ``--set`` overrides."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        loaded = read_yaml_file(p, "config file") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping at the top level")
        raw = _deep_merge(raw, loaded)
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}: {format_validation_errors(err)}") from None


#: settings whose default changed after run folders were first written, with the value every run
#: had before the setting existed. A run folder's ``config.yaml`` records every setting the code
#: had when it was written, so one without such a key was written before the setting existed and
#: trained with this value: :func:`load_run_config` reads it so (an explicit key always wins).
BEFORE_THE_SETTING: dict[str, dict[str, Any]] = {
    "data": {"aux_holdout": None},
    "optim": {"task_gradients": "autograd"},
}


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """A run folder's recorded configuration (its ``config.yaml``), with every setting added since
    it was written at the value it trained with (:data:`BEFORE_THE_SETTING`), not today's default:
    a run recorded before a default changed resumes, reproduces and compares as the run it was."""
    return load_config(path, overrides, base=copy.deepcopy(BEFORE_THE_SETTING))


def config_from_record(record: dict[str, Any]) -> RunConfig:
    """:func:`load_run_config` for a record already read (a checkpoint's ``config``)."""
    return load_config(base=_deep_merge(copy.deepcopy(BEFORE_THE_SETTING), record))


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
