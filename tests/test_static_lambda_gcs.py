"""Static lambda and GCS: each against a plain loop over entities written from its definition, the
properties they promise (weight 0 is single-task training exactly; GCS never opposes the main
task on an entity), their parameter checks, and short runs through the real trainer."""

from __future__ import annotations

import math
import re

import pytest
import torch

from pmtrec_lab.cli import main as cli_main
from pmtrec_lab.config import RunConfig, load_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.mtl import MethodParamsError, StepContext, make_method, method_names, resolve_params
from pmtrec_lab.mtl.gcs import gcs_gates
from pmtrec_lab.mtl.registry import method_table_markdown
from pmtrec_lab.mtl.static_lambda import WEIGHT_GRID
from pmtrec_lab.train import train
from pmtrec_lab.train.run import load_diagnostics
from tests.helpers import tiny_synthetic

NAMES = ["rec", "social:friends", "item_label:category", "user_label:community"]


def make_ctx(names: list[str] | None = None, k: int = 4, seed: int = 0) -> StepContext:
    return StepContext(
        step=0,
        epoch=0,
        steps_per_epoch=10,
        task_names=list(names if names is not None else NAMES[:k]),
        generator=torch.Generator().manual_seed(seed),
    )


def random_problem(k: int = 4, e: int = 40, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    """Random step with partial task sets, entities without a main-task gradient, and zero-norm
    gradients on active entities (the main task's on a few rows, an auxiliary task's on others)."""
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(k, e, d, generator=g, dtype=dtype)
    active = torch.rand(e, k, generator=g) < 0.6
    active[:5, 0] = False  # rows without a main-task gradient ...
    active[:5, 1] = True  # ... that an auxiliary task touched
    active[5:8, 0] = True  # rows whose main-task gradient is the zero vector
    active[5:8, 1:] = True
    grads[0, 5:8] = 0.0
    active[8:10, :2] = True  # rows whose task-1 gradient is the zero vector
    grads[1, 8:10] = 0.0
    none = ~active.any(1)
    active[none, 0] = True
    grads = grads * active.T.unsqueeze(-1).to(dtype)
    side = (torch.arange(e) >= e // 2).long()
    losses = torch.rand(k, generator=g, dtype=dtype) + 0.5
    return grads, active, side, losses


# ---------------------------------------------------------------------------------------
# Plain references: loops over entities and tasks, Python floats, written from the definitions.
# ---------------------------------------------------------------------------------------
def reference_static_lambda(grads, names, weight, task_weights):
    k_n, e_n, _ = grads.shape
    w = [1.0] + [task_weights.get(names[k], weight) for k in range(1, k_n)]
    out = torch.zeros_like(grads[0])
    for x in range(e_n):
        for k in range(k_n):
            out[x] += w[k] * grads[k, x]
    return out, w


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na = math.sqrt(sum(float(v) ** 2 for v in a))
    nb = math.sqrt(sum(float(v) ** 2 for v in b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return sum(float(u) * float(v) for u, v in zip(a, b)) / (na * nb)


def reference_gcs(grads, active):
    """(combined [E, D], gate [E, K] with 0 where inactive, cos [E, K] with NaN where undefined)."""
    k_n, e_n, _ = grads.shape
    out = torch.zeros_like(grads[0])
    gate = [[0.0] * k_n for _ in range(e_n)]
    cos = [[math.nan] * k_n for _ in range(e_n)]
    for x in range(e_n):
        has_main = bool(active[x, 0])
        out[x] += grads[0, x]
        if has_main:
            gate[x][0] = 1.0
        for k in range(1, k_n):
            if not bool(active[x, k]):
                continue
            if has_main:
                c = _cos(grads[k, x], grads[0, x])
                cos[x][k] = c
                w = max(0.0, c)
            else:
                w = 1.0
            gate[x][k] = w
            out[x] += w * grads[k, x]
        if has_main:
            cos[x][0] = _cos(grads[0, x], grads[0, x])
    return out, torch.tensor(gate, dtype=grads.dtype), torch.tensor(cos, dtype=grads.dtype)


# ---------------------------------------------------------------------------------------
# static-lambda
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weight", "task_weights"),
    [(w, {}) for w in WEIGHT_GRID]
    + [(0.1, {"item_label:category": 0.0}), (0.0, {"social:friends": 0.3, "user_label:community": 2.5})],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_static_lambda_matches_loop_reference(weight, task_weights, seed):
    grads, active, side, losses = random_problem(seed=seed)
    method = make_method("static-lambda", 4, weight=weight, task_weights=task_weights)
    out = method.combine(grads, active, side, losses, make_ctx())
    expected, w = reference_static_lambda(grads, NAMES, weight, task_weights)
    torch.testing.assert_close(out.combined, expected, rtol=1e-12, atol=1e-12)
    assert out.head_weights.tolist() == w  # heads follow the same weights
    assert out.diagnostics["task_weights"].tolist() == w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_static_lambda_weight_zero_is_single_task_exactly(dtype):
    grads, active, side, losses = random_problem(seed=3, dtype=dtype)
    grads[1:] *= 1e6  # large auxiliary gradients change nothing: they are skipped, not scaled
    single = make_method("single-task", 4).combine(grads, active, side, losses, make_ctx())
    for params in ({"weight": 0.0}, {"weight": 0.5, "task_weights": dict.fromkeys(NAMES[1:], 0.0)}):
        out = make_method("static-lambda", 4, **params).combine(grads, active, side, losses, make_ctx())
        assert torch.equal(out.combined, single.combined)
        assert torch.equal(out.head_weights, single.head_weights)
        assert out.combined.dtype == dtype and out.head_weights.dtype == dtype
        assert torch.equal(out.diagnostics["task_weights"], single.diagnostics["task_weights"])


def test_static_lambda_default_is_ew():
    grads, active, side, losses = random_problem(seed=4)
    method = make_method("static-lambda", 4)
    assert method.params == {"weight": 1.0, "task_weights": {}}
    out = method.combine(grads, active, side, losses, make_ctx())
    ew = make_method("ew", 4).combine(grads, active, side, losses, make_ctx())
    torch.testing.assert_close(out.combined, ew.combined, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.head_weights, ew.head_weights)


def test_static_lambda_task_weights_follow_the_run_task_order():
    method = make_method("static-lambda", 4, weight=0.1, task_weights={"user_label:community": 0.7})
    assert method.task_weight_list(NAMES) == [1.0, 0.1, 0.1, 0.7]
    reordered = ["rec", "user_label:community", "social:friends", "item_label:category"]
    assert method.task_weight_list(reordered) == [1.0, 0.7, 0.1, 0.1]
    # without task_weights the names are not needed
    assert make_method("static-lambda", 3, weight=0.3).task_weight_list([]) == [1.0, 0.3, 0.3]


@pytest.mark.parametrize(
    "unknown",
    ["social:trust", "item_label:categroy", "REC", "user_label:community "],
)
def test_static_lambda_unknown_task_name_is_refused_naming_it_and_the_tasks(unknown):
    method = make_method("static-lambda", 4, weight=0.1, task_weights={unknown: 0.5})
    grads, active, side, losses = random_problem()
    with pytest.raises(MethodParamsError, match=r"method\.params\.task_weights: unknown task ") as info:
        method.combine(grads, active, side, losses, make_ctx())
    msg = str(info.value)
    assert repr(unknown) in msg
    assert all(repr(n) in msg for n in NAMES) and "'rec' (main)" in msg
    assert info.value.fields == ("task_weights",) and isinstance(info.value, ValueError)


def test_static_lambda_several_unknown_names_are_all_named():
    method = make_method("static-lambda", 4, task_weights={"a": 0.1, "social:friends": 0.2, "b": 0.3})
    with pytest.raises(MethodParamsError, match=r"unknown tasks 'a', 'b' \(this run's tasks: 'rec' \(main\)"):
        method.task_weight_list(NAMES)


def test_static_lambda_main_task_weight_is_not_settable():
    method = make_method("static-lambda", 4, task_weights={"rec": 0.5})
    with pytest.raises(MethodParamsError, match=r"'rec' is the main task, whose weight is always 1"):
        method.task_weight_list(NAMES)


def test_static_lambda_task_names_of_another_length_are_refused():
    method = make_method("static-lambda", 4, task_weights={"social:friends": 0.5})
    with pytest.raises(ValueError, match="built for 4 tasks, got 3 task names"):
        method.task_weight_list(NAMES[:3])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"weight": -0.1}, "weight"),
        ({"weight": float("inf")}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": True}, "weight"),
        ({"weight": "0.1"}, "weight"),
        ({"task_weights": {"social:friends": -1.0}}, "task_weights"),
        ({"task_weights": {"social:friends": float("nan")}}, "task_weights"),
        ({"task_weights": {"social:friends": False}}, "task_weights"),
        ({"task_weights": {" ": 0.5}}, "task_weights"),
        ({"task_weights": [0.5]}, "task_weights"),
    ],
)
def test_static_lambda_invalid_parameters_are_named(params, field):
    with pytest.raises(MethodParamsError, match=rf"method\.params\.{field}\b"):
        make_method("static-lambda", 4, **params)


def test_static_lambda_task_weights_from_the_command_line():
    cfg = load_config(
        overrides=[
            "method.name=static-lambda",
            "method.params.weight=0.03",
            "method.params.task_weights.social:friends=0.3",
        ]
    )
    assert resolve_params(cfg.method.name, cfg.method.params) == {
        "weight": 0.03,
        "task_weights": {"social:friends": 0.3},
    }
    with pytest.raises(
        ConfigError, match=r"method\.params\.task_weights\.social:friends: Input should be greater"
    ):
        load_config(overrides=["method.name=static-lambda", "method.params.task_weights.social:friends=-1"])


# ---------------------------------------------------------------------------------------
# gcs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("head_weights", ["one", "mean-gate"])
@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (4, 2), (4, 3)])
def test_gcs_matches_loop_reference(k, seed, head_weights):
    grads, active, side, losses = random_problem(k=k, seed=seed)
    out = make_method("gcs", k, head_weights=head_weights).combine(grads, active, side, losses, make_ctx(k=k))
    expected, gate, cos = reference_gcs(grads, active)
    torch.testing.assert_close(out.combined, expected, rtol=1e-12, atol=1e-12)
    d = out.diagnostics
    # the main column of entity_weights is 1 where the main task touched the entity, 0 elsewhere
    torch.testing.assert_close(d["entity_weights"], gate, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d["cos_main"], cos, rtol=1e-12, atol=1e-12, equal_nan=True)
    mean_gate = [1.0]
    conflict = [0.0]
    for j in range(1, k):
        rows = [x for x in range(grads.shape[1]) if bool(active[x, j])]
        mean_gate.append(sum(float(gate[x, j]) for x in rows) / len(rows) if rows else 1.0)
        gated = [x for x in rows if bool(active[x, 0])]
        conflict.append(sum(float(cos[x, j]) < 0 for x in gated) / len(gated) if gated else 0.0)
    torch.testing.assert_close(d["task_weights"], torch.tensor(mean_gate, dtype=grads.dtype))
    torch.testing.assert_close(d["conflict_fraction"], torch.tensor(conflict, dtype=grads.dtype))
    pairs = [(x, j) for x in range(grads.shape[1]) for j in range(1, k) if bool(active[x, j])]
    share = sum(bool(active[x, 0]) for x, _ in pairs) / len(pairs)
    assert float(d["share_gated"]) == pytest.approx(share, rel=1e-12)
    expected_head = mean_gate if head_weights == "mean-gate" else [1.0] * k
    torch.testing.assert_close(out.head_weights, torch.tensor(expected_head, dtype=grads.dtype))
    assert all(not v.requires_grad for v in d.values())


def test_gcs_hand_computed_entities():
    """Four entities, K = 3, D = 2: an aligned, a conflicting and a zero auxiliary gradient; a zero
    main gradient (cos 0, so the auxiliary gradients are dropped); no main gradient (weight 1)."""
    g0 = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    g1 = torch.tensor([[1.0, 1.0], [3.0, 4.0], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    g2 = torch.tensor([[-1.0, 1.0], [0.0, 0.0], [-1.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    grads = torch.stack([g0, g1, g2])
    active = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    out = make_method("gcs", 3).combine(
        grads, active, torch.tensor([0, 0, 1, 1]), torch.ones(3), make_ctx(k=3)
    )
    c = 1 / math.sqrt(2)
    expected = torch.tensor(
        [
            [1 + c, c],  # g1 at 45 degrees: weight cos = 1/sqrt(2); g2 at 135 degrees: dropped
            [0.0, 0.0],  # zero main gradient: cos defined as 0, g1 dropped
            [2.0, 6.0],  # no main gradient: g1 + g2 with weight 1
            [3.0, 0.0],  # zero g1 (cos 0, weight 0), g2 aligned (weight 1)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out.combined, expected, rtol=1e-12, atol=1e-12)
    w = out.diagnostics["entity_weights"]
    torch.testing.assert_close(
        w, torch.tensor([[1, c, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.float64), rtol=1e-12, atol=0
    )
    cos = out.diagnostics["cos_main"]
    assert cos[1, 1] == 0.0 and cos[3, 1] == 0.0  # zero vectors: cosine 0, not NaN
    assert math.isnan(cos[2, 1]) and math.isnan(cos[1, 2])  # undefined: no main gradient / inactive
    assert out.diagnostics["conflict_fraction"].tolist() == [0.0, 0.0, 0.5]
    assert float(out.diagnostics["share_gated"]) == pytest.approx(5 / 7)  # 7 auxiliary rows, 5 gated


@pytest.mark.parametrize("seed", range(4))
def test_gcs_never_opposes_the_main_task_on_an_entity(seed):
    """<G_x, g_x^0> >= ||g_x^0||^2 wherever the main task touched x (every added auxiliary
    gradient has a positive inner product with g_x^0), even with strong conflicts."""
    grads, active, side, losses = random_problem(seed=seed)
    grads[1:] -= 0.8 * grads[0] * active.T[1:].unsqueeze(-1)
    out = make_method("gcs", 4).combine(grads, active, side, losses, make_ctx())
    has_main = active[:, 0]
    inner = (out.combined * grads[0]).sum(-1)[has_main]
    assert bool((inner >= (grads[0] ** 2).sum(-1)[has_main] - 1e-12).all())
    assert float(out.diagnostics["conflict_fraction"][1:].mean()) > 0.2  # conflicts were there


def test_gcs_cosine_of_tiny_float32_gradients():
    """Squares of 2^-100-sized float32 entries underflow to 0; the per-row rescaling keeps the
    cosines (and so the gates) those of the unscaled gradients, bit for bit."""
    grads, active, _, _ = random_problem(seed=5, dtype=torch.float32)
    gate, cos = gcs_gates(grads, active)
    tiny_gate, tiny_cos = gcs_gates(grads * 2.0**-100, active)
    assert torch.equal(tiny_gate, gate) and torch.equal(tiny_cos, cos)
    assert float(gate[1:].sum()) > 0
    assert bool(((grads * 2.0**-100) ** 2).sum(-1).eq(0).all())  # the naive norms would be 0


def test_gcs_without_auxiliary_updates():
    grads, active, side, losses = random_problem(k=3, seed=6)
    active[:, 1:] = False
    grads[1:] = 0.0
    out = make_method("gcs", 3, head_weights="mean-gate").combine(grads, active, side, losses, make_ctx(k=3))
    assert torch.equal(out.combined, grads[0])
    assert out.head_weights.tolist() == [1.0, 1.0, 1.0]  # a task that touched nothing: 1
    assert math.isnan(float(out.diagnostics["share_gated"]))
    single = make_method("gcs", 1).combine(grads[:1], active[:, :1], side, losses[:1], make_ctx(k=1))
    assert torch.equal(single.combined, grads[0]) and single.head_weights.tolist() == [1.0]


@pytest.mark.parametrize(("value", "message"), [("mean", "Input should be 'one' or 'mean-gate'"), (1, "")])
def test_gcs_invalid_parameters_are_named(value, message):
    with pytest.raises(MethodParamsError, match=rf"method\.params\.head_weights: {message}"):
        make_method("gcs", 3, head_weights=value)


# ---------------------------------------------------------------------------------------
# both
# ---------------------------------------------------------------------------------------
METHOD_CASES = [
    ("static-lambda", {"weight": 0.3, "task_weights": {"item_label:category": 0.03}}),
    ("gcs", {}),
    ("gcs", {"head_weights": "mean-gate"}),
]


@pytest.mark.parametrize(("name", "params"), METHOD_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deterministic_and_independent_of_the_generator(name, params, dtype):
    grads, active, side, losses = random_problem(seed=7, dtype=dtype)
    a = make_method(name, 4, **params)
    first = a.combine(grads, active, side, losses, make_ctx(seed=0))
    again = a.combine(grads.clone(), active.clone(), side, losses, make_ctx(seed=1))
    fresh = make_method(name, 4, **params).combine(grads, active, side, losses, make_ctx(seed=2))
    for other in (again, fresh):
        assert torch.equal(first.combined, other.combined)
        assert torch.equal(first.head_weights, other.head_weights)
        assert first.diagnostics.keys() == other.diagnostics.keys()
        for key, value in first.diagnostics.items():
            torch.testing.assert_close(value, other.diagnostics[key], rtol=0, atol=0, equal_nan=True)
    assert first.combined.dtype == dtype and torch.isfinite(first.combined).all()
    assert a.state_dict() == {}  # no state
    with pytest.raises(ValueError, match="built for 4 tasks, got grads for 3"):
        a.combine(grads[:3], active[:, :3], side, losses[:3], make_ctx(k=3))


def test_methods_are_listed_everywhere(capsys):
    baselines = method_names("baseline")
    assert "static-lambda" in baselines and "gcs" in baselines
    assert baselines.index("static-lambda") == baselines.index("metabalance") + 1
    table = method_table_markdown(builtin_only=True)
    assert "| `static-lambda` | baseline | Static lambda (Xin et al.; Kurin et al., NeurIPS 2022)" in table
    assert "| `gcs` | baseline | GCS (Du et al., arXiv 1812.02224)" in table
    assert cli_main(["methods", "--names", "--family", "baseline"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"static-lambda", "gcs"} <= set(listed)


# ---------------------------------------------------------------------------------------
# through the real trainer, on the generated dataset
# ---------------------------------------------------------------------------------------
SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}


def small_cfg(name: str, params: dict, seed: int = 0) -> RunConfig:
    return load_config(
        base={
            "data": {"name": "synthetic", "loader_args": SYN, "k_core": 2},
            "tasks": {"include": ["social:friends", "item_label:category", "user_label:community"]},
            "encoder": {"name": "mf", "dim": 16},
            "optim": {"epochs": 2, "batch_size": 256, "lr": 0.01},
            "eval": {"ks": [10, 20], "patience": 10},
            "method": {"name": name, "params": params},
            "seed": seed,
            "progress": "none",
        }
    )


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


def _finite_run(run) -> None:
    assert run.finished
    losses = run.history.filter(like="loss/").to_numpy()
    assert losses.shape == (2, 4) and all(math.isfinite(v) for v in losses.reshape(-1))
    assert all(math.isfinite(v) for v in run.metrics["test"].values())
    assert run.metrics["test"]["ndcg@20"] > 0.0


def test_static_lambda_weight_zero_trains_exactly_like_single_task(ds, tmp_path):
    single = train(small_cfg("single-task", {}), tmp_path / "single", dataset=ds)
    zero = train(small_cfg("static-lambda", {"weight": 0.0}), tmp_path / "zero", dataset=ds)
    _finite_run(zero)
    assert zero.metrics["test"] == single.metrics["test"]
    assert zero.metrics["best_epoch"] == single.metrics["best_epoch"]
    cols = [c for c in single.history.columns if c.startswith(("loss/", "valid/"))]
    assert zero.history[cols].equals(single.history[cols])


@pytest.mark.parametrize(("name", "params"), METHOD_CASES)
def test_end_to_end_training_gives_finite_metrics(ds, tmp_path, name, params):
    run = train(small_cfg(name, params), tmp_path / "run", dataset=ds)
    _finite_run(run)
    epochs = load_diagnostics(tmp_path / "run")["epochs"]
    weights = epochs[epochs["metric"] == "task_weight"]
    assert set(weights["task"]) == {"rec", "social:friends", "item_label:category", "user_label:community"}
    if name == "gcs":
        assert weights["value"].between(0.0, 1.0).all()
    else:
        last = weights[weights["epoch"] == 2].set_index("task")["value"].to_dict()
        expected = {
            "rec": 1.0,
            "social:friends": 0.3,
            "item_label:category": 0.03,
            "user_label:community": 0.3,
        }
        assert last == pytest.approx(expected, rel=1e-6)  # float32 weights


def test_gcs_same_seed_same_metrics(ds, tmp_path):
    a = train(small_cfg("gcs", {}), tmp_path / "a", dataset=ds)
    b = train(small_cfg("gcs", {}), tmp_path / "b", dataset=ds)
    assert a.metrics["test"] == b.metrics["test"]


def test_unknown_task_name_fails_at_the_first_step_of_a_run(ds, tmp_path):
    cfg = small_cfg("static-lambda", {"weight": 0.1, "task_weights": {"social:trust": 0.5}})
    tasks = "'rec' (main), 'social:friends', 'item_label:category', 'user_label:community'"
    with pytest.raises(
        MethodParamsError, match=re.escape(f"unknown task 'social:trust' (this run's tasks: {tasks})")
    ):
        train(cfg, tmp_path / "bad", dataset=ds)
