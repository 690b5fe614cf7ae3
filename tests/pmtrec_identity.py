"""PMTRec's numbers, recorded so that a reorganization of its code can prove it moved none (issue 25).

Shared by ``tests/test_pmtrec_stages_identity.py`` (every PMTRec configuration, at the level of
one ``combine`` and of a short training, against digests recorded with the code before the stage
package) and ``tests/test_pmtrec_checkpoints.py`` (method states saved by that code load into
today's and continue as they did). Nothing here reads PMTRec's internals: only ``make_method``,
``combine``, ``observe_meta_loss``, ``state_dict`` / ``load_state_dict`` and ``train``.

The references were written once, by the code before the change (commit "Record PMTRec's
numbers before the stage package"), with::

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.pmtrec_identity --write

Digests are SHA-256 of the exact bytes of every tensor (with dtype and shape) and of every
number's ``repr``: they hold on the CPU, one torch thread, with the pinned torch build.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pmtrec_lab.mtl import StepContext, get_entry, make_method, method_names

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "pmtrec_stages_identity.json"
OLD_STATES = DATA / "pmtrec_states_before_stages.pt"

#: v3 switches and settings that no preset turns on (name -> registered method, parameters)
EXTRA: dict[str, tuple[str, dict[str, Any]]] = {
    "norm-sqrt_count": ("pmtrec", {"norm_mode": "sqrt_count"}),
    "norm-count": ("pmtrec", {"norm_mode": "count"}),
    "norm-fitted": ("pmtrec", {"norm_mode": "fitted"}),
    "focus-everywhere": ("pmtrec", {"focus_everywhere": True}),
    "v2-fitted-focus": ("pmtrec-v2", {"norm_mode": "fitted", "focus_everywhere": True}),
    "gmb-side-mean": ("pmtrec", {"gmb_mode": "side", "rho": 1.0, "gmb_target": "mean"}),
    "gmb-side-max": ("pmtrec", {"gmb_mode": "side", "rho": 1.0, "gmb_target": "max"}),
    "gmb-reduce-half": ("pmtrec", {"rho": 0.5, "gmb_c": 2.0}),
    "uniform": ("pmtrec", {"weight_mode": "uniform"}),
    "normalize-cosine": ("pmtrec", {"normalize": True, "schedule": "cosine", "tau": 0.5}),
    "shared-focus": ("pmtrec", {"weight_mode": "shared", "focus_everywhere": True}),
    "meta-cos": ("pmtrec", {"usefulness": "meta_cos", "usefulness_lr": 0.05}),
    "meta-cos-delta-focus": (
        "pmtrec",
        {"usefulness": "meta_cos", "delta": "learned", "focus_everywhere": True, "norm_mode": "fitted"},
    ),
    "spsa-fast": ("pmtrec", {"usefulness": "meta_spsa", "spsa_every": 2}),
    "everything": (
        "pmtrec",
        {
            "moment_balance": True, "usefulness": "meta_spsa", "spsa_every": 2, "delta": "permuted",
            "focus_everywhere": True, "norm_mode": "fitted", "weight_mode": "shared",
        },
    ),  # fmt: skip
    "v2-moments-delta": ("pmtrec-v2", {"moment_balance": True, "delta": "learned", "ema_decay": 0.5}),
}


def configurations() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every built-in PMTRec-family method at its preset, then ``EXTRA`` (a method a test
    registers, as the contributor guide's example, is not one)."""
    builtin = [n for n in method_names("pmtrec") if get_entry(n).cls.__module__.startswith("pmtrec_lab.")]
    out = {name: (name, {}) for name in builtin}
    out.update({f"extra/{k}": v for k, v in EXTRA.items()})
    return out


# --- digests ------------------------------------------------------------------------------
def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=str):
            h.update(f"K{key!r}".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, pd.DataFrame):
        h.update(f"F{list(obj.columns)}{list(obj.dtypes.astype(str))}{obj.shape}".encode())
        h.update(pd.util.hash_pandas_object(obj, index=True).to_numpy().tobytes())
    elif isinstance(obj, float):
        h.update(f"f{obj.hex() if math.isfinite(obj) else repr(obj)}".encode())
    elif obj is None or isinstance(obj, (bool, int, str)):
        h.update(f"{type(obj).__name__}{obj!r}".encode())
    else:
        raise TypeError(f"cannot digest {type(obj).__name__}")


def digest(obj: Any) -> str:
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- one combine at a time ------------------------------------------------------------------
def problem(
    step: int,
    k: int = 3,
    num_entities: tuple[int, int] = (30, 25),
    touched: tuple[int, int] = (16, 14),
    d: int = 6,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A deterministic step: ``touched`` users and items drawn from tables of ``num_entities``
    rows (rows recur across steps, so the per-entity state is read back), partial task sets,
    conflicting and differently sized task gradients, occurrence counts and a meta gradient."""
    g = torch.Generator().manual_seed(7919 * seed + step)
    users = torch.randperm(num_entities[0], generator=g)[: touched[0]]
    items = torch.randperm(num_entities[1], generator=g)[: touched[1]]
    ids = torch.cat([users, items])
    side = torch.cat([torch.zeros(touched[0]), torch.ones(touched[1])]).long()
    e = len(ids)
    active = torch.rand(e, k, generator=g) < 0.6
    none = ~active.any(1)
    active[none, torch.randint(0, k, (int(none.sum()),), generator=g)] = True
    scales = torch.tensor([1.0, 4.0, 0.2] + [1.5] * (k - 3), dtype=dtype)[:k]
    grads = torch.randn(k, e, d, generator=g, dtype=dtype) * scales.view(k, 1, 1)
    grads[1:] -= 0.6 * grads[0]
    grads = grads * active.T.unsqueeze(-1).to(dtype)
    counts = torch.randint(1, 4, (e, k), generator=g).to(dtype) * active.to(dtype)
    losses = torch.rand(k, generator=g, dtype=dtype) + 0.5
    meta_active = torch.rand(e, generator=g) < 0.7
    meta_grads = torch.randn(e, d, generator=g, dtype=dtype) * meta_active.unsqueeze(1).to(dtype)
    extra = {
        "counts": counts, "entity_ids": ids, "num_entities": num_entities,
        "meta_grads": meta_grads, "meta_active": meta_active,
    }  # fmt: skip
    return grads, active, side, losses, extra


def run_steps(method: Any, steps: range, k: int = 3, **shape: Any) -> list[Any]:
    """Run ``method`` over ``problem(step)`` for ``steps`` (4 steps an epoch; the meta loss
    observed at the method's windows, a made-up smooth value); returns every step's outputs."""
    gen = torch.Generator().manual_seed(123)
    outs = []
    for step in steps:
        grads, active, side, losses, extra = problem(step, k=k, **shape)
        ctx = StepContext(
            step=step, epoch=step // 4, steps_per_epoch=4, task_names=[f"t{i}" for i in range(k)],
            generator=gen, **extra,
        )  # fmt: skip
        every = method.meta_value_every
        if every is not None and step % every == 0:
            method.observe_meta_loss(1.0 + 0.3 * math.sin(step) + 0.01 * step, ctx)
        res = method.combine(grads, active, side, losses, ctx)
        outs.append([res.combined, res.head_weights, dict(res.diagnostics)])
    return outs


def combine_digest(name: str, params: dict[str, Any], k: int = 3) -> str:
    """Ten steps (three epochs) of ``combine`` and the state after them."""
    with one_thread():
        method = make_method(name, k, **params)
        outs = run_steps(method, range(10), k=k)
        return digest([outs, method.state_dict()])


def combine_digests() -> dict[str, str]:
    out = {label: combine_digest(name, params) for label, (name, params) in configurations().items()}
    # more than 12 tasks: shared weights compact their group codes with torch.unique
    shared = {"weight_mode": "shared", "gmb_mode": "side", "rho": 0.5}
    out["k14/shared"] = combine_digest("pmtrec", shared, 14)
    out["k14/default"] = combine_digest("pmtrec", {}, 14)
    return out


# --- short trainings ------------------------------------------------------------------------
SYNTHETIC = {"num_users": 150, "num_items": 90}


def train_short(
    name: str, params: dict[str, Any], out: Path, dim: int = 16, epochs: int = 3, data: dict | None = None
) -> Path:
    """A short training on the small synthetic dataset (the meta split when the method reads it),
    with the settings its digests were recorded under: autograd task gradients, no auxiliary
    holdout (both switched on by default after them)."""
    from pmtrec_lab.reports.defaults import notebook_config
    from pmtrec_lab.train import train

    meta = make_method(name, 3, **params).reads_meta_split
    cfg = notebook_config(
        dataset="synthetic", loader_args=data or SYNTHETIC, dim=dim, epochs=epochs, lr=0.01, method=name,
        method_params=params, batch_size=256,
        overrides={
            "progress": "none", "data": {"meta_split": meta, "aux_holdout": 0},
            "optim": {"task_gradients": "autograd"},
        },
    )  # fmt: skip
    with one_thread():
        train(cfg, out)
    return out


def training_digest(run: Path) -> dict[str, str]:
    """Digests of a finished run: final model and method state, history and metrics (wall time
    left out) and the diagnostics tables."""
    from pmtrec_lab.compare.reproduce import without_seconds
    from pmtrec_lab.train.run import load_checkpoint, load_diagnostics

    last = load_checkpoint(run / "last.pt")
    history = json.loads((run / "history.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "model": digest(last["model"]),
        "method": digest(last["method"]),
        "history": digest(without_seconds(history)),
        "metrics": digest(without_seconds(metrics)),
        "diagnostics": digest(load_diagnostics(run)),
    }


def training_digests(names: list[str] | None = None) -> dict[str, dict[str, str]]:
    configs = configurations()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in names or list(configs):
            name, params = configs[label]
            run = train_short(name, params, Path(tmp) / label.replace("/", "_"))
            out[label] = training_digest(run)
            shutil.rmtree(run)
    return out


# --- method states saved before the change --------------------------------------------------
#: the checkpoints' model: small (fewer entities, dim 4, two epochs) so that the saved states stay
#: a few KB each
STATE_DATA, STATE_DIM, STATE_EPOCHS = {"num_users": 80, "num_items": 50}, 4, 2


def continuation_digest(name: str, params: dict[str, Any], state: dict[str, Any], shape: dict) -> str:
    """Load ``state`` into a fresh method and run five more steps on the model's tables."""
    with one_thread():
        method = make_method(name, 3, **params)
        method.load_state_dict(state)
        outs = run_steps(method, range(20, 25), dtype=torch.float32, seed=5, **shape)
        return digest([outs, method.state_dict()])


def state_shape(run: Path) -> dict[str, Any]:
    from pmtrec_lab.train.run import load_checkpoint

    model = load_checkpoint(run / "last.pt")["model"]
    users = model["encoder.user_embedding.weight"]
    items = model["encoder.item_embedding.weight"]
    return {"num_entities": (users.shape[0], items.shape[0]), "touched": (30, 20), "d": users.shape[1]}


def write_old_states() -> dict[str, str]:
    """Train every configuration briefly, save its method state (``OLD_STATES``) and return the
    digest of its continuation after a reload."""
    from pmtrec_lab.train.run import load_checkpoint

    configs = configurations()
    saved: dict[str, Any] = {}
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (name, params) in configs.items():
            run = train_short(
                name, params, Path(tmp) / label.replace("/", "_"), STATE_DIM, STATE_EPOCHS, STATE_DATA
            )
            state = load_checkpoint(run / "last.pt")["method"]
            shape = state_shape(run)
            saved[label] = {"state": state, "shape": shape}
            digests[label] = continuation_digest(name, params, state, shape)
    torch.save(saved, OLD_STATES)
    return digests


def main(argv: list[str]) -> None:
    if argv != ["--write"]:
        raise SystemExit("usage: python -m tests.pmtrec_identity --write  (with the code to record)")
    DATA.mkdir(exist_ok=True)
    reference = {
        "combine": combine_digests(),
        "train": training_digests(),
        "continuation": write_old_states(),
    }
    REFERENCE.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE} and {OLD_STATES}")


if __name__ == "__main__":
    main(sys.argv[1:])
