"""PMTRec (steps 2-6 of docs/pmtrec-method.md) and its presets, pinned by properties and by an
independent loop-per-entity reference implementation written from the specification."""

from __future__ import annotations

import math

import pytest
import torch

from pmtrec_lab.mtl import METHODS, MethodParamsError, StepContext, make_method, method_names
from pmtrec_lab.mtl._gram import (
    combine_rows,
    conflict_projection,
    entity_gram,
    gram_norms,
    side_masked_mean,
    side_onehot,
    side_table,
    task_major_stats,
)
from pmtrec_lab.mtl.pmtrec import PMTRec, PMTRecParams, schedule_beta

PMTREC_DEFAULTS = PMTRecParams().as_dict()

PRESETS = method_names("pmtrec")  # PMTRec and every registered configuration


def make_ctx(step: int = 0, steps_per_epoch: int = 10, k: int = 3, e: int | None = None) -> StepContext:
    """A step context; with ``e``, also the entities' ids as the trainer sets them (needed by the
    default's per-entity GMB memory): entity i of the step is table row i + side * e, so rows are
    unique and the same entity index means the same entity in every step."""
    ctx = StepContext(
        step=step,
        epoch=step // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        task_names=[f"t{i}" for i in range(k)],
        generator=torch.Generator().manual_seed(0),
    )
    if e is not None:
        ctx.entity_ids, ctx.num_entities = torch.arange(e), (e, e)
    return ctx


def random_problem(
    k: int = 3,
    e: int = 40,
    d: int = 8,
    seed: int = 0,
    p_active: float = 0.6,
    dtype: torch.dtype = torch.float64,
    task_scales: tuple[float, ...] | None = None,
    conflict: float = 0.0,
    main: int = 0,
):
    """Random step: each entity has >= 1 task, partial task sets occur, zero rows where inactive.

    ``conflict`` > 0 mixes ``-conflict * g_main`` into every auxiliary gradient (many conflicts).
    """
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(k, e, d, generator=g, dtype=dtype)
    if conflict:
        for j in range(k):
            if j != main:
                grads[j] = grads[j] - conflict * grads[main]
    if task_scales is not None:
        grads = grads * torch.tensor(task_scales, dtype=dtype).view(k, 1, 1)
    active = torch.rand(e, k, generator=g) < p_active
    none = ~active.any(1)
    active[none, torch.randint(0, k, (int(none.sum()),), generator=g)] = True
    side = (torch.arange(e) >= e // 2).long()
    grads = grads * active.T.unsqueeze(-1).to(dtype)
    losses = torch.rand(k, generator=g, dtype=dtype) + 0.5
    return grads, active, side, losses


# ---------------------------------------------------------------------------------------
# An independent reference: explicit loops over entities, tasks and sides, no Gramian.
# ---------------------------------------------------------------------------------------
class ReferencePMTRec:
    def __init__(self, k, tau, weight_mode, rho, gmb_target, ema_decay, align, schedule, beta_max,
                 horizon, normalize, norm_mode="raw", focus_everywhere=False, gmb_mode="side",
                 gmb_c=1.0, memory_decay=0.9, usefulness="off", usefulness_lr=0.01,
                 lambda_max=2.0, delta="off", delta_lr=0.1, delta_decay=0.01,
                 delta_max=1.0, spsa_every=25, spsa_eps=0.3, spsa_lr=0.2, moment_balance=False,
                 moment_decay=0.999, **v4):  # fmt: skip
        # v4's stages have loop references of their own (tests/test_level_selection.py,
        # tests/test_task_adam.py); this reference covers v2 and v3 with them off
        assert not v4.get("level_select") and not v4.get("task_adam"), v4
        self.k, self.tau, self.mode, self.rho, self.target = k, tau, weight_mode, rho, gmb_target
        self.decay, self.align, self.schedule = ema_decay, align, schedule
        self.beta_max, self.horizon, self.normalize, self.main = beta_max, horizon, normalize, 0
        self.norm_mode = norm_mode
        self.focus, self.gmb_mode, self.gmb_c = focus_everywhere, gmb_mode, gmb_c
        self.mem_decay = memory_decay
        self.usefulness, self.eta, self.lam_max = usefulness, usefulness_lr, lambda_max
        self.lam = {(k, s): 1.0 for k in range(k) for s in (0, 1)}
        self.delta, self.d_lr, self.d_decay, self.d_max = delta, delta_lr, delta_decay, delta_max
        self.dtab: dict[tuple[int, int], float] = {}  # (global row, task) -> delta
        self.moment_balance, self.m_decay = moment_balance, moment_decay
        self.v: dict[tuple[int, int], torch.Tensor] = {}  # (global row, task) -> second moment [D]
        self.nv: dict[tuple[int, int], int] = {}
        self.ref: dict[int, torch.Tensor] = {}  # per global row: moving-average main gradient
        self.mag: dict[int, float] = {}  # and its norm
        self.m: dict[tuple[int, int], float] = {}
        self.a: dict[tuple[int, int], float] = {}  # fitted exponents

    def exponent(self, norms, counts, active, side, k, s):
        """v3 step 2': the fitted exponent of (task k, side s), a least-squares slope by hand."""
        pts = [
            (math.log(counts[x][k]), math.log(norms[x][k]))
            for x in range(len(norms))
            if int(side[x]) == s and bool(active[x, k]) and counts[x][k] >= 1 and norms[x][k] > 0
        ]
        n = len(pts)
        if n:
            mx = sum(p[0] for p in pts) / n
            my = sum(p[1] for p in pts) / n
            var = sum((p[0] - mx) ** 2 for p in pts)
            if var > 1e-6 * n:
                slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / var
                old = self.a.get((k, s))
                self.a[(k, s)] = slope if old is None else self.decay * old + (1 - self.decay) * slope
        return min(max(self.a.get((k, s), 0.0), 0.0), 2.0)

    def signal(self, norms, counts, active, side):
        """n_x^k, or n_x^k / c^a (v3 ``norm_mode``)."""
        if self.norm_mode == "raw":
            return norms
        e_n, k_n = len(norms), self.k
        power = {"sqrt_count": lambda k, s: 0.5, "count": lambda k, s: 1.0}.get(self.norm_mode)
        if power is None:  # fitted: one exponent per (task, side), updated before use
            exps = {
                (k, s): self.exponent(norms, counts, active, side, k, s) for k in range(k_n) for s in (0, 1)
            }
            power = lambda k, s: exps[(k, s)]  # noqa: E731
        return [
            [norms[x][k] / max(counts[x][k], 1.0) ** power(k, int(side[x])) for k in range(k_n)]
            for x in range(e_n)
        ]

    def beta(self, t):
        if self.schedule == "none":
            return 0.0
        f = min(t / self.horizon, 1.0)
        if self.schedule == "linear":
            return self.beta_max * f
        return self.beta_max * (1 - math.cos(math.pi * f)) / 2

    def scale(self, k, s):
        if self.rho == 0 or (k, s) not in self.m or self.m[(k, s)] == 0:
            return 1.0
        ms = [self.m[(j, s)] for j in range(self.k) if (j, s) in self.m]
        if self.target == "main":
            if (self.main, s) not in self.m:
                return 1.0
            t = self.m[(self.main, s)]
        elif self.target == "mean":
            t = sum(ms) / len(ms)
        else:
            t = max(ms)
        return (1 - self.rho) + self.rho * t / self.m[(k, s)]

    def update_lambda(self, grads, active, side, meta, meta_active):
        """v3 usefulness: lambda += eta * mean cos(meta, g^k) per (task, side), by hand."""
        for k in range(1, self.k):
            for s in (0, 1):
                cs = []
                for x in range(grads.shape[1]):
                    if int(side[x]) != s or not bool(active[x, k]) or not bool(meta_active[x]):
                        continue
                    a, b = grads[k, x], meta[x]
                    den = float(a.norm() * b.norm())
                    if den > 0:
                        cs.append(float(a @ b) / den)
                if cs:
                    new = self.lam[(k, s)] + self.eta * sum(cs) / len(cs)
                    self.lam[(k, s)] = min(max(new, 0.0), self.lam_max)

    def update_delta(self, grads, active, rows, meta, meta_active):
        """v3 deviations: delta <- clip((1 - decay) delta + lr cos(meta, g^k)), by hand."""
        for x in range(grads.shape[1]):
            for k in range(1, self.k):
                if not bool(active[x, k]) or not bool(meta_active[x]):
                    continue
                a, b = grads[k, x], meta[x]
                den = float(a.norm() * b.norm())
                if den > 0:
                    old = self.dtab.get((rows[x], k), 0.0)
                    new = (1 - self.d_decay) * old + self.d_lr * float(a @ b) / den
                    self.dtab[(rows[x], k)] = min(max(new, -self.d_max), self.d_max)

    def step(
        self, grads, active, side, t, counts=None, rows=None, meta=None, meta_active=None, perm=None,
        spsa_applied=None,
    ):  # fmt: skip
        k_n, e_n, d = grads.shape
        if self.moment_balance:  # v3 (d): per-(row, task) second moments, by hand
            grads = grads.clone()
            for x in range(e_n):
                for k in range(k_n):
                    if bool(active[x, k]):
                        key = (rows[x], k)
                        old = self.v.get(key, torch.zeros(d, dtype=grads.dtype))
                        self.v[key] = self.m_decay * old + (1 - self.m_decay) * grads[k, x] ** 2
                        self.nv[key] = self.nv.get(key, 0) + 1
                main_key = (rows[x], self.main)
                if main_key not in self.nv:
                    continue
                rms0 = (self.v[main_key] / (1 - self.m_decay ** self.nv[main_key])).sqrt()
                for k in range(k_n):
                    if k != self.main and (rows[x], k) in self.nv:
                        rms = (self.v[(rows[x], k)] / (1 - self.m_decay ** self.nv[(rows[x], k)])).sqrt()
                        grads[k, x] = grads[k, x] * rms0 / (rms + 1e-12)
        if self.usefulness == "meta_cos":
            self.update_lambda(grads, active, side, meta, meta_active)
        if self.delta != "off":
            self.update_delta(grads, active, rows, meta, meta_active)
        norms = [[float(torch.sqrt((grads[k, x] ** 2).sum())) for k in range(k_n)] for x in range(e_n)]
        raw = norms
        virtual = [False] * e_n
        if self.focus or self.gmb_mode == "entity_reduce":  # v3 memory, updated before use
            for x in range(e_n):
                if bool(active[x, self.main]):
                    row, g0, n0 = rows[x], grads[self.main, x], raw[x][self.main]
                    if row in self.ref:
                        self.ref[row] = self.mem_decay * self.ref[row] + (1 - self.mem_decay) * g0
                        self.mag[row] = self.mem_decay * self.mag[row] + (1 - self.mem_decay) * n0
                    else:
                        self.ref[row], self.mag[row] = g0.clone(), n0
                elif self.focus and rows[x] in self.ref and bool(active[x].any()):
                    virtual[x] = True
        if self.norm_mode != "raw":
            norms = self.signal(norms, counts, active, side)
        for s in (0, 1):
            for k in range(k_n):
                xs = [x for x in range(e_n) if int(side[x]) == s and bool(active[x, k])]
                if xs:
                    mean = sum(norms[x][k] for x in xs) / len(xs)
                    old = self.m.get((k, s))
                    self.m[(k, s)] = mean if old is None else self.decay * old + (1 - self.decay) * mean
        beta = self.beta(t)
        weights = []
        for x in range(e_n):
            s = int(side[x])
            tasks = [k for k in range(k_n) if bool(active[x, k])] + ([self.main] if virtual[x] else [])
            logits = {}
            for k in tasks:
                r = norms[x][k] / self.m[(k, s)] if self.m[(k, s)] > 0 else 0.0
                if virtual[x] and k == self.main:
                    r = 1.0  # the memory stands in at the side's typical magnitude
                base = 0.0 if (self.mode == "uniform" or math.isinf(self.tau)) else r / self.tau
                logits[k] = base + (beta if k == self.main else 0.0)
            z = sum(math.exp(v) for v in logits.values())
            weights.append({k: math.exp(v) / z for k, v in logits.items()})
        if self.mode == "shared":  # mean over the entities of the same side and task set
            groups: dict[tuple, list[int]] = {}
            for x in range(e_n):
                groups.setdefault((int(side[x]), tuple(sorted(weights[x]))), []).append(x)
            shared = [None] * e_n
            for (_, tasks), xs in groups.items():
                mean = {k: sum(weights[x][k] for x in xs) / len(xs) for k in tasks}
                for x in xs:
                    shared[x] = dict(mean)
            weights = shared
        out = torch.zeros(e_n, d, dtype=grads.dtype)
        for x in range(e_n):
            s = int(side[x])
            has_main = bool(active[x, self.main])
            g0 = grads[self.main, x] if has_main else (self.ref[rows[x]] if virtual[x] else None)
            for k, w in weights[x].items():
                if k == self.main and not has_main:
                    continue  # the memory's share: nothing to apply
                gb = grads[k, x] * (self.scale(k, s) if self.gmb_mode == "side" else 1.0)
                if self.gmb_mode == "entity_reduce" and self.rho > 0 and k != self.main:
                    cut = 1.0
                    if rows[x] in self.ref and raw[x][k] > self.gmb_c * self.mag[rows[x]]:
                        cut = self.gmb_c * self.mag[rows[x]] / raw[x][k]
                    gb = gb * ((1 - self.rho) + self.rho * cut)
                if self.usefulness == "meta_cos" and k != self.main:
                    gb = gb * self.lam[(k, s)]
                if self.usefulness == "meta_spsa" and k != self.main:
                    gb = gb * float(spsa_applied[s, k])
                if self.delta != "off" and k != self.main:
                    read = rows[x] if self.delta == "learned" else int(perm[rows[x]])
                    gb = gb * math.exp(self.dtab.get((read, k), 0.0))
                if self.align and k != self.main and g0 is not None:
                    dot = float(gb @ g0)
                    if dot < 0:
                        gb = gb - dot / float(g0 @ g0) * g0
                out[x] += w * gb
            if not self.normalize:
                out[x] *= len(weights[x])
        w_mat = torch.zeros(e_n, k_n, dtype=grads.dtype)
        for x in range(e_n):
            for k, w in weights[x].items():
                w_mat[x, k] = w
        return out, w_mat


def full_params(**over):
    return {**PMTREC_DEFAULTS, **over}


# ---------------------------------------------------------------------------------------
# Hand-computed cases.
# ---------------------------------------------------------------------------------------
def test_hand_computed_k2_alignment():
    """One user, g0 = (1, 0), g1 = (-1, 1). First batch: m = the norms themselves, so
    r = (1, 1) and with beta = 0 the weights are softmax(1, 1) = (1/2, 1/2). <g1, g0> = -1 < 0:
    g1 - (-1 / 1) g0 = (0, 1). G = |A| * (g0/2 + (0, 1)/2) = (1, 1)."""
    grads = torch.tensor([[[1.0, 0.0]], [[-1.0, 1.0]]], dtype=torch.float64)
    active = torch.ones(1, 2, dtype=torch.bool)
    side = torch.zeros(1, dtype=torch.long)
    m = make_method("pmtrec", 2, rho=0.0, schedule="none", align=True)
    out = m.combine(grads, active, side, torch.ones(2), make_ctx(k=2))
    torch.testing.assert_close(out.combined, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(
        out.diagnostics["entity_weights"], torch.full((1, 2), 0.5, dtype=torch.float64)
    )
    # Without alignment: 2 * (g0 + g1) / 2 = (0, 1).
    m2 = make_method("pmtrec", 2, rho=0.0, schedule="none", align=False)
    out2 = m2.combine(grads, active, side, torch.ones(2), make_ctx(k=2))
    torch.testing.assert_close(out2.combined, torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    # cos(g1, g0) = -1 / sqrt(2): one conflicting pair out of one.
    torch.testing.assert_close(
        out.diagnostics["cos_main"], torch.tensor([[1.0, -1 / math.sqrt(2)]], dtype=torch.float64)
    )
    assert out.diagnostics["conflict_fraction"].tolist() == [0.0, 1.0]


def test_hand_computed_k2_relative_weights_and_gmb():
    """Two users, main task only on both, aux task 1 on both; norms n0 = (1, 3), n1 = (2, 2).
    m0 = 2, m1 = 2 -> r0 = (1/2, 3/2), r1 = (1, 1); tau = 1, beta = 0:
    w_x = softmax(r0_x, r1_x): user 0 (e^.5, e^1)/Z, user 1 (e^1.5, e^1)/Z.
    Orthogonal gradients (no alignment). rho = 0.5, target main: T = m0 = 2 = m1 -> factor 1."""
    g0 = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    g1 = torch.tensor([[0.0, 2.0], [0.0, 2.0]], dtype=torch.float64)
    grads = torch.stack([g0, g1])
    active = torch.ones(2, 2, dtype=torch.bool)
    side = torch.zeros(2, dtype=torch.long)
    m = make_method("pmtrec", 2, tau=1.0, rho=0.5, gmb_mode="side", schedule="none")
    out = m.combine(grads, active, side, torch.ones(2), make_ctx(k=2))
    w_u0 = torch.tensor([math.exp(0.5), math.exp(1.0)], dtype=torch.float64)
    w_u0 /= w_u0.sum()
    w_u1 = torch.tensor([math.exp(1.5), math.exp(1.0)], dtype=torch.float64)
    w_u1 /= w_u1.sum()
    torch.testing.assert_close(out.diagnostics["entity_weights"], torch.stack([w_u0, w_u1]))
    expected = 2 * (torch.stack([w_u0, w_u1])[:, :1] * g0 + torch.stack([w_u0, w_u1])[:, 1:] * g1)
    torch.testing.assert_close(out.combined, expected)
    # head weights: mean over touched entities of |A_x| w_x^k.
    torch.testing.assert_close(out.head_weights, 2 * (w_u0 + w_u1) / 2)


def test_hand_computed_k3_gmb_and_focus():
    """One item touched by three tasks with orthogonal gradients of norms 1, 4, 2 (first batch:
    m = norms, r = 1 for all). rho = 1, target main (T = 1): gb = (e0, e1, e2) * 1.
    beta(t) at t = H/2 with linear schedule, beta_max = 2: beta = 1 ->
    w = (e^2, e, e) / (e^2 + 2e); G = 3 * sum_k w_k gb_k."""
    grads = torch.zeros(3, 1, 3, dtype=torch.float64)
    grads[0, 0, 0], grads[1, 0, 1], grads[2, 0, 2] = 1.0, 4.0, 2.0
    active = torch.ones(1, 3, dtype=torch.bool)
    side = torch.ones(1, dtype=torch.long)
    m = make_method(
        "pmtrec", 3, rho=1.0, gmb_mode="side", gmb_target="main", schedule="linear", beta_max=2.0, horizon=4.0
    )
    out = m.combine(grads, active, side, torch.ones(3), make_ctx(step=20, steps_per_epoch=10))  # t = 2
    z = math.exp(2) + 2 * math.exp(1)
    w = torch.tensor([math.exp(2) / z, math.exp(1) / z, math.exp(1) / z], dtype=torch.float64)
    torch.testing.assert_close(out.diagnostics["entity_weights"][0], w)
    torch.testing.assert_close(out.combined[0], 3 * w)
    assert float(out.diagnostics["beta"]) == pytest.approx(1.0)
    # Before GMB the magnitudes relative to main are (1, 4, 2) on the item side; after: all 1.
    torch.testing.assert_close(
        out.diagnostics["norm_ratio_before"][1], torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    )
    torch.testing.assert_close(out.diagnostics["norm_ratio_after"][1], torch.ones(3, dtype=torch.float64))
    assert torch.isnan(out.diagnostics["norm_ratio_before"][0]).all()  # no user touched


@pytest.mark.parametrize(
    "over",
    [
        {"gmb_mode": "side", "rho": 0.0},  # v2 (the v3 default's GMB: the entity-memory tests)
        {"gmb_mode": "side", "rho": 0.0, "weight_mode": "shared"},
        {"gmb_mode": "side", "weight_mode": "uniform", "rho": 1.0, "gmb_target": "mean"},
        {"gmb_mode": "side", "tau": 0.5, "rho": 0.7, "gmb_target": "max", "schedule": "cosine",
         "normalize": True},
        {"gmb_mode": "side", "align": False, "rho": 0.3, "ema_decay": 0.5},
    ],
)
def test_matches_loop_reference_over_several_steps(over):
    """K = 3, partial task sets, conflicts, several steps (EMA), against the loop reference."""
    params = full_params(**over)
    main = 0
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **params)
    for step in range(4):
        grads, active, side, losses = random_problem(
            seed=step, e=24, d=5, conflict=0.7, task_scales=(1.0, 10.0 ** (step - 2), 3.0), main=main
        )
        ctx = make_ctx(step=step * 7, steps_per_epoch=5)
        out = method.combine(grads, active, side, losses, ctx)
        exp_g, exp_w = ref.step(grads, active, side, ctx.fractional_epoch)
        torch.testing.assert_close(out.diagnostics["entity_weights"], exp_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Checks from the specification.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"tau": math.inf},  # the old spelling of uniform, converted
        {"weight_mode": "uniform"},
        {"weight_mode": "shared", "tau": math.inf},
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_without_gmb_and_tf_is_ew(params, dtype):
    method = make_method("pmtrec", 3, rho=0.0, align=False, schedule="none", **params)
    for step in range(3):
        grads, active, side, losses = random_problem(seed=step, conflict=1.0, dtype=dtype)
        assert (active.sum(1) < 3).any() and (active.sum(1) > 1).any()  # partial task sets
        out = method.combine(grads, active, side, losses, make_ctx(step=step, e=grads.shape[1]))
        ew = (grads * active.T.unsqueeze(-1)).sum(0)
        torch.testing.assert_close(out.combined, ew, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out.head_weights, torch.ones(3, dtype=dtype), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["pmtrec", "pmtrec-no-gmb", "pmtrec-no-personalization", "ew-align"])
def test_alignment_never_opposes_main(name):
    main = 0
    kwargs: dict = {}
    for step in range(3):
        grads, active, side, losses = random_problem(seed=10 + step, e=200, conflict=1.5, main=main)
        method = (
            make_method(name, 3, rho=1.0, **kwargs) if name != "ew-align" else make_method(name, 3, **kwargs)
        )
        out = method.combine(grads, active, side, losses, make_ctx(step=step, e=grads.shape[1]))
        has_main = active[:, main]
        inner = (out.combined * grads[main]).sum(-1)[has_main]
        assert inner.min() >= -1e-7
        # The inputs do conflict: without alignment some entities would oppose the main task.
        off = make_method("pmtrec", 3, align=False, rho=1.0)
        raw = (
            off.combine(grads, active, side, losses, make_ctx(step=step, e=grads.shape[1])).combined
            * grads[main]
        ).sum(-1)
        assert (raw[has_main] < 0).any()


@pytest.mark.parametrize("target", ["main", "mean", "max"])
def test_gmb_rho1_decay0_gives_target_magnitude(target):
    """Each entity touched by exactly one task (so G_x = gb_x^k): the mean of ||gb_x^k|| over the
    entities of side s touched by k equals T^s, computed here from the raw batch means."""
    k, e, d = 3, 60, 6
    g = torch.Generator().manual_seed(3)
    scales = torch.tensor([1e-3, 1e-1, 7.0], dtype=torch.float64)
    grads = torch.randn(k, e, d, generator=g, dtype=torch.float64) * scales.view(k, 1, 1)
    owner = torch.arange(e) % k
    active = torch.nn.functional.one_hot(owner, k).bool()
    side = (torch.arange(e) >= e // 2).long()
    grads = grads * active.T.unsqueeze(-1)
    method = make_method("pmtrec", k, rho=1.0, gmb_mode="side", ema_decay=0.0, gmb_target=target, align=False)
    for step in range(2):  # the second step checks the decay-0 EMA (= this batch's mean)
        grads = grads * (1.0 + step)
        out = method.combine(grads, active, side, torch.ones(k), make_ctx(step=step))
        for s in (0, 1):
            means = []
            for task in range(k):
                rows = (side == s) & active[:, task]
                means.append(grads[task][rows].norm(dim=-1).mean())
            t_s = {"main": means[0], "mean": sum(means) / k, "max": max(means)}[target]
            for task in range(k):
                rows = (side == s) & active[:, task]
                got = out.combined[rows].norm(dim=-1).mean()
                torch.testing.assert_close(got, t_s, rtol=1e-10, atol=0)


def test_weights_depend_on_relative_not_raw_norms():
    """Scaling one task's gradients by 1e-4 leaves the weights unchanged once its magnitude is
    (re)initialized: r = n / m is scale-free. A softmax over raw norms would not be."""
    grads, active, side, losses = random_problem(seed=5, e=50)
    scaled = grads.clone()
    scaled[1] *= 1e-4
    a = make_method("pmtrec", 3, rho=0.0, align=False)
    b = make_method("pmtrec", 3, rho=0.0, align=False)
    wa = a.combine(grads, active, side, losses, make_ctx(e=grads.shape[1])).diagnostics["entity_weights"]
    wb = b.combine(scaled, active, side, losses, make_ctx()).diagnostics["entity_weights"]
    torch.testing.assert_close(wa, wb, rtol=1e-10, atol=1e-12)
    # Personalization is on: entities with the same task set get different weights.
    full = active.all(1)
    assert wa[full].std(0).min() > 1e-3


def test_shared_mode_is_per_side_mean_over_same_task_set():
    """Shared weights: identical for the entities of one side with the same A_x, equal to the
    batch mean of their personalized weights (rows still sum to 1 over A_x). With one task set
    per side this is the per-side batch mean, renormalized over A_x (trivially)."""
    grads, active, side, losses = random_problem(seed=8, e=80)
    pers = make_method("pmtrec", 3, weight_mode="personalized")
    shared = make_method("pmtrec", 3, weight_mode="shared")
    ctx = make_ctx(step=13, e=grads.shape[1])
    wp = pers.combine(grads, active, side, losses, ctx).diagnostics["entity_weights"]
    ws = shared.combine(grads, active, side, losses, ctx).diagnostics["entity_weights"]
    n_groups = 0
    for s in (0, 1):
        for pat in {tuple(row.tolist()) for row in active[side == s]}:
            rows = (side == s) & (active == torch.tensor(pat)).all(1)
            expected = wp[rows].mean(0)
            torch.testing.assert_close(ws[rows], expected.expand(int(rows.sum()), 3))
            torch.testing.assert_close(expected.sum(), torch.tensor(1.0, dtype=wp.dtype))
            n_groups += 1
    assert n_groups >= 6  # several task sets on both sides
    # Personalized weights vary inside a group; shared ones do not.
    full = active.all(1) & (side == 0)
    assert wp[full].std(0).max() > 1e-3 and ws[full].std(0).max() < 1e-12


def test_shared_mode_of_uniform_weights_is_uniform():
    grads, active, side, losses = random_problem(seed=9, e=60)
    out = make_method("pmtrec", 3, weight_mode="shared", tau=math.inf, schedule="none").combine(
        grads, active, side, losses, make_ctx(e=grads.shape[1])
    )
    n_act = active.sum(1, keepdim=True).double()
    torch.testing.assert_close(out.diagnostics["entity_weights"], active.double() / n_act)


def test_magnitudes_ema_updated_before_use_and_kept_when_untouched():
    grads, active, side, losses = random_problem(seed=1, e=30, p_active=1.0)
    method = make_method("pmtrec", 3, ema_decay=0.9)
    m1 = method.combine(grads, active, side, losses, make_ctx(e=grads.shape[1])).diagnostics["magnitude"]
    for s in (0, 1):
        torch.testing.assert_close(m1[s], grads[:, side == s].norm(dim=-1).mean(1))
    # Step 2: task 2 touches items only; its user magnitude must not move.
    grads2, _, _, _ = random_problem(seed=2, e=30, p_active=1.0)
    active2 = active.clone()
    active2[side == 0, 2] = False
    grads2 = grads2 * active2.T.unsqueeze(-1)
    m2 = method.combine(grads2, active2, side, losses, make_ctx(step=1, e=30)).diagnostics["magnitude"]
    assert m2[0, 2] == m1[0, 2]
    expected = 0.9 * m1[1, 2] + 0.1 * grads2[2, side == 1].norm(dim=-1).mean()
    torch.testing.assert_close(m2[1, 2], expected)


def test_diagnostics_shapes_and_meaning():
    grads, active, side, losses = random_problem(seed=4, e=50, conflict=0.8)
    out = make_method("pmtrec", 3).combine(grads, active, side, losses, make_ctx(step=3, e=grads.shape[1]))
    dg = out.diagnostics
    w = dg["entity_weights"]
    assert w.shape == (50, 3) and (w[~active] == 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(50, dtype=w.dtype))
    assert dg["norm_ratio_before"].shape == (2, 3) and dg["norm_ratio_after"].shape == (2, 3)
    assert dg["beta"].dim() == 0
    cos = dg["cos_main"]
    both = active & active[:, :1]
    assert torch.isnan(cos[~both]).all() and not torch.isnan(cos[both]).any()
    for k in range(3):
        sel = both[:, k]
        direct = torch.nn.functional.cosine_similarity(grads[k][sel], grads[0][sel], dim=-1)
        torch.testing.assert_close(cos[sel, k], direct)
        assert dg["conflict_fraction"][k] == pytest.approx(float((direct < 0).double().mean()))
    # After alignment: the cosine of g^k minus its conflicting component along g^0, >= 0.
    after = dg["cos_main_after"]
    assert torch.isnan(after[~both]).all() and (after[both] >= -1e-12).all()
    for k in (1, 2):
        sel = both[:, k]
        gk, g0 = grads[k][sel], grads[0][sel]
        dot = (gk * g0).sum(-1, keepdim=True)
        aligned = torch.where(dot < 0, gk - dot / (g0 * g0).sum(-1, keepdim=True) * g0, gk)
        direct = torch.nn.functional.cosine_similarity(aligned, g0, dim=-1)
        torch.testing.assert_close(after[sel, k], direct, atol=1e-7, rtol=1e-6)
    n_act = active.sum(1, keepdim=True).double()
    expected_head = (n_act * w).sum(0) / active.sum(0)
    torch.testing.assert_close(out.head_weights, expected_head)
    for v in dg.values():
        assert not v.requires_grad


def test_gram_helpers_match_direct_computation():
    grads, active, side, _ = random_problem(seed=6, e=20)
    gram = entity_gram(grads)
    for x in range(20):
        torch.testing.assert_close(gram[x], grads[:, x] @ grads[:, x].T)
    torch.testing.assert_close(gram_norms(gram), grads.norm(dim=-1).T)
    norms, inner = task_major_stats(gram, 1)
    torch.testing.assert_close(norms, grads.norm(dim=-1))
    torch.testing.assert_close(inner, (grads * grads[1]).sum(-1))
    p = conflict_projection(inner, 1, active[:, 1])
    for k in (0, 2):
        aligned = grads[k] - p[k].unsqueeze(1) * grads[1]
        assert ((aligned * grads[1]).sum(-1) >= -1e-12).all()
        unchanged = (inner[k] >= 0) | ~active[:, 1]
        assert torch.equal(aligned[unchanged], grads[k][unchanged])
    assert (p[1] == 0).all()
    onehot = side_onehot(side, torch.float64)
    table = torch.arange(6, dtype=torch.float64).view(2, 3)
    torch.testing.assert_close(side_table(table, side == 1), table[side].T)
    means, counts = side_masked_mean(norms, active.T, onehot)
    for s in (0, 1):
        for k in range(3):
            sel = (side == s) & active[:, k]
            assert counts[s, k] == sel.sum()
            torch.testing.assert_close(means[s, k], norms[k][sel].mean())
    coef = torch.rand(3, 20, dtype=torch.float64)
    torch.testing.assert_close(combine_rows(coef, grads), (coef.unsqueeze(-1) * grads).sum(0))
    torch.testing.assert_close(combine_rows(coef[:, 0], grads), (coef[:, 0].view(3, 1, 1) * grads).sum(0))


# ---------------------------------------------------------------------------------------
# Schedule, presets, parameters, state.
# ---------------------------------------------------------------------------------------
def test_schedule_values():
    h, bm = 8.0, 2.0
    for sched in ("linear", "cosine"):
        assert schedule_beta(0.0, sched, bm, h) == 0.0
        assert schedule_beta(h, sched, bm, h) == pytest.approx(bm)
        assert schedule_beta(3 * h, sched, bm, h) == pytest.approx(bm)
        assert schedule_beta(h / 2, sched, bm, h) == pytest.approx(bm / 2)  # both midpoints
    assert schedule_beta(h / 4, "linear", bm, h) == pytest.approx(bm / 4)
    assert schedule_beta(h / 4, "cosine", bm, h) == pytest.approx(bm * (1 - math.cos(math.pi / 4)) / 2)
    assert schedule_beta(5.0, "none", bm, h) == 0.0
    # The method reads t = ctx.fractional_epoch.
    m = make_method("pmtrec", 2, schedule="linear", beta_max=bm, horizon=h)
    grads, active, side, losses = random_problem(k=2, seed=0)
    out = m.combine(grads, active, side, losses, make_ctx(step=30, steps_per_epoch=10, k=2, e=grads.shape[1]))
    assert float(out.diagnostics["beta"]) == pytest.approx(bm * 3 / h)


def test_presets_build_with_their_parameters():
    expected = {
        "pmtrec": {},
        "pmtrec-no-personalization": {"weight_mode": "shared"},
        "pmtrec-no-align": {"align": False},
        "pmtrec-no-schedule": {"schedule": "none"},
        "pmtrec-no-gmb": {"rho": 0.0},
        "ew-align": {"weight_mode": "uniform", "rho": 0.0, "align": True, "schedule": "none"},
        "ew-gmb": {"weight_mode": "uniform", "align": False, "schedule": "none"},
        "pmtrec-gmb": {"gmb_mode": "side", "rho": 0.5},
        "pmtrec-v2": {
            "norm_mode": "raw", "focus_everywhere": False, "gmb_mode": "side", "rho": 0.0,
            "usefulness": "off", "delta": "off", "moment_balance": False,
        },  # fmt: skip
    }
    v2_off = expected["pmtrec-v2"]
    for name in [n for n in expected if n.startswith("pmtrec-") and n != "pmtrec-v2"]:
        expected[f"pmtrec-v2-{name.removeprefix('pmtrec-')}"] = {**v2_off, **expected[name]}
    expected |= {  # v3's pieces the study did not choose, switched on (no v2 forms)
        "pmtrec-delta": {"delta": "learned"},
        "pmtrec-delta-permuted": {"delta": "permuted"},
        "pmtrec-meta-spsa": {"usefulness": "meta_spsa"},
        "pmtrec-moments": {"moment_balance": True},
    }
    assert set(PRESETS) == set(expected)
    for name in PRESETS:
        m = make_method(name, 3)
        assert isinstance(m, PMTRec) and METHODS[name] is type(m) and m.name == name
        assert m.params == {**PMTREC_DEFAULTS, **expected[name]}, name
        # User parameters override preset ones.
        assert make_method(name, 3, tau=0.25, rho=0.5).params["tau"] == 0.25
    assert make_method("pmtrec-gmb", 3).rho == 0.5 and make_method("ew-gmb", 3).rho == 1.0
    # v3's default GMB: per entity, reduce-only, full strength (docs/pmtrec-method.md, "Iteration 2")
    assert (PMTREC_DEFAULTS["gmb_mode"], PMTREC_DEFAULTS["rho"], PMTREC_DEFAULTS["gmb_c"]) == (
        "entity_reduce", 1.0, 1.0)
    with pytest.raises(ValueError, match="rho"):
        make_method("ew-gmb", 3, rho=0.0)


def test_unknown_and_invalid_parameters():
    with pytest.raises(MethodParamsError, match="method.params.bogus: unknown parameter"):
        make_method("pmtrec", 3, bogus=1)
    with pytest.raises(MethodParamsError, match="temperature"):
        make_method("pmtrec-no-align", 3, temperature=1.0)
    bad = {
        "tau": [0.0, -1.0, float("nan"), "1", -math.inf, True],
        "weight_mode": ["personal"],
        "rho": [-0.1, 1.5],
        "gmb_target": ["min"],
        "ema_decay": [1.0, -0.1],
        "align": [1, "true"],
        "schedule": ["exp"],
        "beta_max": [-1.0, math.inf],
        "horizon": [0.0, math.inf],
        "normalize": ["yes"],
        "main_task": [3, -1, 0.5, 1],  # gone: task 0 is the main task (0 is dropped with a notice)
    }
    for key, values in bad.items():
        for v in values:
            with pytest.raises(MethodParamsError, match=f"method.params.{key}"):
                make_method("pmtrec", 3, **{key: v})
    assert make_method("pmtrec", 3, main_task=0).params == PMTREC_DEFAULTS


def test_old_uniform_spelling_converts_with_a_notice(caplog):
    """``tau: .inf`` (v2 configurations) loads as weight_mode='uniform', with a logged notice,
    and a run written with it resumes (both sides convert the same way)."""
    from pmtrec_lab.config import load_config

    with caplog.at_level("WARNING", logger="pmtrec_lab.mtl"):
        cfg = load_config(overrides=["method.name=pmtrec", "method.params.tau=.inf"])
    assert cfg.method.params == {"weight_mode": "uniform"}
    assert "old spelling" in caplog.text
    again = load_config(base=cfg.to_dict())
    assert again.to_yaml() == cfg.to_yaml()
    assert make_method("pmtrec", 3, tau=math.inf).weight_mode == "uniform"


#: presets that run without the meta loss's gradients (the others' state: their own tests below)
NO_META_PRESETS = [n for n in PRESETS if not make_method(n, 3).needs_meta]


@pytest.mark.parametrize("name", NO_META_PRESETS)
def test_state_dict_round_trip_reproduces_next_combine(name):
    a = make_method(name, 3)
    for step in range(3):
        grads, active, side, losses = random_problem(seed=step, task_scales=(1.0, 5.0, 0.1))
        a.combine(grads, active, side, losses, make_ctx(step=step, e=grads.shape[1]))
    state = a.state_dict()
    b = make_method(name, 3)
    b.load_state_dict(state)
    grads, active, side, losses = random_problem(seed=99)
    oa = a.combine(grads, active, side, losses, make_ctx(step=3, e=grads.shape[1]))
    ob = b.combine(grads, active, side, losses, make_ctx(step=3, e=grads.shape[1]))
    assert torch.equal(oa.combined, ob.combined)
    assert torch.equal(oa.head_weights, ob.head_weights)
    for key in oa.diagnostics:
        torch.testing.assert_close(oa.diagnostics[key], ob.diagnostics[key], rtol=0, atol=0, equal_nan=True)
    # A fresh method (no state) differs: the state matters.
    c = make_method(name, 3)
    oc = c.combine(grads, active, side, losses, make_ctx(step=3, e=grads.shape[1]))
    assert not torch.equal(oc.diagnostics["magnitude"], oa.diagnostics["magnitude"])
    with pytest.raises(ValueError):
        b.load_state_dict({"magnitude": torch.zeros(2, 3)})


def test_float32_outputs_finite_for_tiny_gradients():
    """Realistic scales (row norms ~1e-4) and an entity set where one side lacks a task."""
    grads, active, side, losses = random_problem(
        seed=12, e=500, dtype=torch.float32, task_scales=(1e-4, 3e-3, 1e-5)
    )
    active[side == 0, 2] = False
    grads = grads * active.T.unsqueeze(-1)
    for name in NO_META_PRESETS:
        out = make_method(name, 3).combine(grads, active, side, losses, make_ctx(step=5, e=grads.shape[1]))
        assert out.combined.shape == (500, 8) and out.combined.dtype == torch.float32
        assert torch.isfinite(out.combined).all() and torch.isfinite(out.head_weights).all()
        assert torch.isfinite(out.diagnostics["entity_weights"]).all()


def test_shared_mode_with_many_tasks_matches_reference():
    """More than 12 tasks: the shared-mode groups are compacted with torch.unique instead of
    bit codes; same result as the loop reference."""
    k = 14
    over = {"weight_mode": "shared", "rho": 0.5, "gmb_mode": "side"}
    method = make_method("pmtrec", k, **over)
    ref = ReferencePMTRec(k, **full_params(**over))
    grads, active, side, losses = random_problem(k=k, e=40, d=4, seed=21, p_active=0.3, conflict=0.5)
    ctx = make_ctx(step=4, k=k, e=40)
    out = method.combine(grads, active, side, losses, ctx)
    exp_g, exp_w = ref.step(grads, active, side, ctx.fractional_epoch)
    torch.testing.assert_close(out.diagnostics["entity_weights"], exp_w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------
# v3 step 2': magnitudes free of batch frequency.
# ---------------------------------------------------------------------------------------
def random_counts(active: torch.Tensor, seed: int) -> torch.Tensor:
    """[E, K] occurrence counts: 1-6 where active, 0 elsewhere."""
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randint(1, 7, tuple(active.shape), generator=g).float() * active.float()


@pytest.mark.parametrize(
    "over",
    [
        {"norm_mode": "sqrt_count", "gmb_mode": "side", "rho": 0.0},
        {"norm_mode": "count", "weight_mode": "shared", "gmb_mode": "side", "rho": 0.0},
        {"norm_mode": "fitted", "gmb_mode": "side", "rho": 0.0},
        {"norm_mode": "fitted", "gmb_mode": "side", "rho": 0.5, "gmb_target": "mean", "ema_decay": 0.5},
    ],
)
def test_frequency_free_norms_match_loop_reference(over):
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **full_params(**over))
    for step in range(4):
        grads, active, side, losses = random_problem(seed=step, e=30, d=5, conflict=0.5)
        counts = random_counts(active, step)
        grads = grads * counts.T.sqrt().unsqueeze(-1).clamp_min(1)  # norms grow with the count
        ctx = make_ctx(step=step * 3, steps_per_epoch=5)
        ctx.counts = counts
        out = method.combine(grads, active, side, losses, ctx)
        exp_g, exp_w = ref.step(grads, active, side, ctx.fractional_epoch, counts=counts.tolist())
        torch.testing.assert_close(out.diagnostics["entity_weights"], exp_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)


def test_fitted_exponent_recovers_a_planted_power():
    """Norms planted as c^0.7 (times unit directions) give a fitted exponent of 0.7, and the
    signal then no longer depends on the count."""
    e, d = 64, 4
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(1, 9, (e, 2), generator=g).float()
    counts[:, 0] = torch.where(torch.arange(e) % 2 == 0, counts[:, 0], counts[:, 0] + 1)
    dirs = torch.nn.functional.normalize(torch.randn(2, e, d, generator=g, dtype=torch.float64), dim=2)
    grads = dirs * counts.T.double().pow(0.7).unsqueeze(-1)
    active = torch.ones(e, 2, dtype=torch.bool)
    side = torch.zeros(e, dtype=torch.long)
    method = make_method("pmtrec", 2, norm_mode="fitted", schedule="none", align=False)
    ctx = make_ctx(k=2, e=e)
    ctx.counts = counts
    out = method.combine(grads, active, side, torch.ones(2), ctx)
    planted = torch.full((2,), 0.7, dtype=torch.float64)
    torch.testing.assert_close(out.diagnostics["norm_exponent"][0], planted)
    w = out.diagnostics["entity_weights"]  # equal signals -> equal weights: 1/2 each
    torch.testing.assert_close(w, torch.full_like(w, 0.5))


def test_frequency_free_modes_need_counts_and_raw_ignores_them():
    grads, active, side, losses = random_problem(seed=1)
    with pytest.raises(ValueError, match="needs ctx.counts"):
        make_method("pmtrec", 3, norm_mode="sqrt_count").combine(
            grads, active, side, losses, make_ctx(e=grads.shape[1])
        )
    ctx = make_ctx(e=grads.shape[1])
    ctx.counts = random_counts(active, 1)
    a = make_method("pmtrec", 3).combine(grads, active, side, losses, ctx)
    b = make_method("pmtrec", 3).combine(grads, active, side, losses, make_ctx(e=grads.shape[1]))
    torch.testing.assert_close(a.combined, b.combined)


def test_fitted_exponent_state_round_trips_and_is_checked():
    grads, active, side, losses = random_problem(seed=2)
    ctx = make_ctx(e=grads.shape[1])
    ctx.counts = random_counts(active, 2)
    m = make_method("pmtrec", 3, norm_mode="fitted")
    m.combine(grads, active, side, losses, ctx)
    state = m.state_dict()
    assert "norm_exponent" in state
    m2 = make_method("pmtrec", 3, norm_mode="fitted")
    m2.load_state_dict(state)
    torch.testing.assert_close(m2._exponent.exponent, m._exponent.exponent)
    with pytest.raises(ValueError, match="norm exponent"):
        make_method("pmtrec", 3).load_state_dict(state)
    with pytest.raises(ValueError, match="norm exponent"):
        make_method("pmtrec", 3, norm_mode="fitted").load_state_dict(make_method("pmtrec", 3).state_dict())


# ---------------------------------------------------------------------------------------
# v3 steps 3' and 5': per-entity memory of the main gradient (focusing everywhere, reduce-only GMB).
# ---------------------------------------------------------------------------------------
NUM_USERS, NUM_ITEMS = 12, 10


def recurring_problem(step: int, k: int = 3, e: int = 14, d: int = 5):
    """A step over a random subset of 22 global rows (users first), so entities recur across
    steps, with and without a main gradient; returns the problem, the context and the rows."""
    g = torch.Generator().manual_seed(500 + step)
    rows = torch.randperm(NUM_USERS + NUM_ITEMS, generator=g)[:e].sort().values
    side = (rows >= NUM_USERS).long()
    ids = torch.where(side == 1, rows - NUM_USERS, rows)
    grads, active, _, losses = random_problem(k=k, e=e, d=d, seed=step, conflict=0.8, p_active=0.5)
    ctx = make_ctx(step=step * 4, steps_per_epoch=5, k=k)
    ctx.entity_ids, ctx.num_entities = ids, (NUM_USERS, NUM_ITEMS)
    return grads, active, side, losses, ctx, rows.tolist()


@pytest.mark.parametrize(
    "over",
    [
        {},  # the default (v3: reduce-only GMB, rho 1, c 1)
        {"focus_everywhere": True},
        {"focus_everywhere": True, "weight_mode": "uniform", "memory_decay": 0.5},
        {"focus_everywhere": True, "weight_mode": "shared", "normalize": True, "align": False},
        {"gmb_mode": "entity_reduce", "rho": 1.0, "gmb_c": 0.5},
        {"gmb_mode": "entity_reduce", "rho": 0.6, "focus_everywhere": True, "tau": 0.5},
    ],
)
def test_entity_memory_matches_loop_reference(over):
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **full_params(**over))
    saw_virtual = False
    for step in range(6):
        grads, active, side, losses, ctx, rows = recurring_problem(step)
        out = method.combine(grads, active, side, losses, ctx)
        exp_g, exp_w = ref.step(grads, active, side, ctx.fractional_epoch, rows=rows)
        torch.testing.assert_close(out.diagnostics["entity_weights"], exp_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)
        saw_virtual |= bool(((exp_w[:, 0] > 0) & ~active[:, 0]).any())
    assert saw_virtual or not over.get("focus_everywhere")  # the memory did stand in


def test_focusing_everywhere_reaches_every_auxiliary_update_with_a_memory():
    plain = make_method("pmtrec", 3)
    focus = make_method("pmtrec", 3, focus_everywhere=True)
    for step in range(6):
        grads, active, side, losses, ctx, _ = recurring_problem(step)
        a = plain.combine(grads, active, side, losses, ctx).diagnostics["focus_share"]
        b = focus.combine(grads, active, side, losses, ctx).diagnostics["focus_share"]
        assert (b >= a - 1e-12).all()
    assert (b[1:] > a[1:]).any()  # later steps: remembered entities are reached


def test_entity_reduce_gmb_never_scales_up():
    method = make_method("pmtrec", 3, gmb_mode="entity_reduce", rho=1.0, gmb_c=2.0)
    for step in range(5):
        grads, active, side, losses, ctx, _ = recurring_problem(step)
        out = method.combine(grads, active, side, losses, ctx)
        reduce = out.diagnostics["gmb_reduce"]
        assert (reduce <= 1 + 1e-12).all() and (reduce > 0).all() and reduce[0] == 1


@pytest.mark.parametrize("over", [{"focus_everywhere": True}, {"gmb_mode": "entity_reduce", "rho": 0.5}])
def test_entity_memory_needs_ids_and_round_trips(over):
    grads, active, side, losses, ctx, _ = recurring_problem(0)
    with pytest.raises(ValueError, match="entity_ids"):
        make_method("pmtrec", 3, **over).combine(grads, active, side, losses, make_ctx())
    m = make_method("pmtrec", 3, **over)
    m.combine(grads, active, side, losses, ctx)
    m2 = make_method("pmtrec", 3, **over)
    m2.load_state_dict(m.state_dict())
    nxt = recurring_problem(1)
    torch.testing.assert_close(m.combine(*nxt[:5]).combined, m2.combine(*nxt[:5]).combined)
    with pytest.raises(ValueError, match="main-gradient memory"):
        make_method("pmtrec-v2", 3).load_state_dict(m.state_dict())


def test_gmb_memory_without_reference_gradients_changes_nothing():
    """The reduce-only GMB keeps only magnitudes (``keep_ref=False``, for speed): the same
    combination, bit for bit, as with the full [N, D] memory, and a state saved with the full
    memory loads into it (the GMB's checkpoints from before the change still resume)."""
    from pmtrec_lab.mtl._entity_memory import MainGradientMemory

    lean = make_method("pmtrec", 3)
    assert lean._memory.keep_ref is False
    full = make_method("pmtrec", 3)
    full._memory = MainGradientMemory(full.params["memory_decay"], keep_ref=True)
    for step in range(6):
        grads, active, side, losses, ctx, _ = recurring_problem(step)
        a = lean.combine(grads, active, side, losses, ctx)
        b = full.combine(grads, active, side, losses, ctx)
        assert torch.equal(a.combined, b.combined) and torch.equal(a.head_weights, b.head_weights)
    assert (a.diagnostics["gmb_reduce"][1:] < 1).any()  # the cut did fire: the memory was read
    assert lean.state_dict()["main_memory"]["ref"].numel() == 0
    resumed = make_method("pmtrec", 3)
    resumed.load_state_dict(full.state_dict())
    nxt = recurring_problem(6)
    assert torch.equal(resumed.combine(*nxt[:5]).combined, full.combine(*nxt[:5]).combined)
    with pytest.raises(ValueError, match="no reference gradients"):
        make_method("pmtrec", 3, focus_everywhere=True).load_state_dict(lean.state_dict())


def test_a_gmb_off_checkpoint_with_a_memory_still_loads():
    """Before rho = 0 stopped keeping the per-entity memory, an entity_reduce run at rho 0 saved
    one (unread); such a checkpoint loads, and resumes exactly as one saved without it."""
    old = make_method("pmtrec", 3, rho=1.0)
    grads, active, side, losses, ctx, _ = recurring_problem(0)
    old.combine(grads, active, side, losses, ctx)
    state = make_method("pmtrec-no-gmb", 3).state_dict() | {"main_memory": old.state_dict()["main_memory"]}
    resumed = make_method("pmtrec-no-gmb", 3)
    resumed.load_state_dict(state)
    fresh = make_method("pmtrec-no-gmb", 3)
    nxt = recurring_problem(1)
    assert torch.equal(resumed.combine(*nxt[:5]).combined, fresh.combine(*nxt[:5]).combined)
    v2_state = make_method("pmtrec-v2", 3).state_dict() | {"main_memory": old.state_dict()["main_memory"]}
    with pytest.raises(ValueError, match="main-gradient memory"):  # elsewhere a memory is refused
        make_method("pmtrec-v2", 3).load_state_dict(v2_state)


def test_pmtrec_v2_preset_is_pinned_to_v2():
    """``pmtrec-v2`` is v2 whatever the defaults become: the v2 values, spelt out here."""
    v2 = {
        "tau": 1.0, "weight_mode": "personalized", "rho": 0.0, "gmb_target": "main", "ema_decay": 0.9,
        "align": True, "schedule": "linear", "beta_max": 2.0, "horizon": 10.0, "normalize": False,
        "norm_mode": "raw", "focus_everywhere": False, "gmb_mode": "side", "usefulness": "off",
        "delta": "off", "moment_balance": False,
    }  # fmt: skip
    params = make_method("pmtrec-v2", 3).params
    assert {k: params[k] for k in v2} == v2
    # the v3-only parameters have no effect with their switches off
    assert set(params) - set(v2) == {
        "gmb_c", "memory_decay", "usefulness_lr", "lambda_max", "delta_lr", "delta_decay", "delta_max",
        "spsa_every", "spsa_eps", "spsa_lr", "moment_decay",
    } | set(PMTRecParams.name_neutral)  # fmt: skip
    # v4's switches are off by default; when v4 changes a default, its off value joins V3_OFF
    assert not params["level_select"] and not params["task_adam"]


# ---------------------------------------------------------------------------------------
# v3 step 3'': usefulness scales from the meta loss's gradient.
# ---------------------------------------------------------------------------------------
def with_meta(ctx, grads, seed: int, harmful: int | None = None, helpful: int | None = None):
    """Meta gradients on ~70% of the rows; task ``harmful`` opposes them, ``helpful`` follows."""
    g = torch.Generator().manual_seed(900 + seed)
    e, d = grads.shape[1], grads.shape[2]
    meta = torch.randn(e, d, generator=g, dtype=grads.dtype)
    if harmful is not None:
        meta = meta - 2.0 * grads[harmful]
    if helpful is not None:
        meta = meta + 2.0 * grads[helpful]
    ctx.meta_active = torch.rand(e, generator=g) < 0.7
    ctx.meta_grads = meta * ctx.meta_active.unsqueeze(1).to(grads.dtype)
    return ctx


@pytest.mark.parametrize(
    "over",
    [
        {"usefulness": "meta_cos", "usefulness_lr": 0.2},
        {"usefulness": "meta_cos", "usefulness_lr": 0.5, "lambda_max": 1.2, "weight_mode": "shared"},
        {"usefulness": "meta_cos", "focus_everywhere": True, "norm_mode": "sqrt_count"},
    ],
)
def test_usefulness_scales_match_loop_reference(over):
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **full_params(**over))
    for step in range(5):
        grads, active, side, losses, ctx, rows = recurring_problem(step)
        ctx = with_meta(ctx, grads, step, harmful=2)
        ctx.counts = random_counts(active, step)
        out = method.combine(grads, active, side, losses, ctx)
        exp_g, exp_w = ref.step(
            grads, active, side, ctx.fractional_epoch, counts=ctx.counts.tolist(), rows=rows,
            meta=ctx.meta_grads, meta_active=ctx.meta_active,
        )  # fmt: skip
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)
        lam = out.diagnostics["usefulness_scale"]
        for (k, s), v in ref.lam.items():
            assert float(lam[s, k]) == pytest.approx(v, abs=1e-12)


def test_a_task_that_opposes_the_meta_gradient_is_scaled_towards_zero():
    method = make_method("pmtrec", 3, usefulness="meta_cos", usefulness_lr=0.3)
    for step in range(12):
        grads, active, side, losses, ctx, _ = recurring_problem(step)
        out = method.combine(grads, active, side, losses, with_meta(ctx, grads, step, harmful=2, helpful=1))
    lam = out.diagnostics["usefulness_scale"]
    assert (lam[:, 2] < 0.5).all() and (lam[:, 0] == 1).all()
    assert (lam[:, 1] > 1.5).all()


def test_usefulness_needs_meta_gradients_and_round_trips():
    grads, active, side, losses, ctx, _ = recurring_problem(0)
    m = make_method("pmtrec", 3, usefulness="meta_cos")
    assert m.needs_meta and not make_method("pmtrec", 3).needs_meta
    with pytest.raises(ValueError, match="meta_split"):
        m.combine(grads, active, side, losses, ctx)
    m.combine(grads, active, side, losses, with_meta(ctx, grads, 0, harmful=1))
    m2 = make_method("pmtrec", 3, usefulness="meta_cos")
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.lam, m.lam)
    with pytest.raises(ValueError, match="usefulness"):
        make_method("pmtrec", 3).load_state_dict(m.state_dict())


# ---------------------------------------------------------------------------------------
# v3: per-entity deviations delta_x^k, learned and permuted (the control).
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over",
    [
        {"delta": "learned", "delta_lr": 0.4},
        {"delta": "learned", "delta_lr": 0.9, "delta_decay": 0.2, "delta_max": 0.3, "weight_mode": "shared"},
        {"delta": "learned", "usefulness": "meta_cos", "usefulness_lr": 0.2, "focus_everywhere": True},
        {"delta": "permuted", "delta_lr": 0.5},
    ],
)
def test_entity_deviations_match_loop_reference(over):
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **full_params(**over))
    assert method.needs_meta
    for step in range(6):  # 22 rows recur across steps; steps 0-4 are epoch 0, step 5 epoch 1
        grads, active, side, losses, ctx, rows = recurring_problem(step)
        ctx = with_meta(ctx, grads, step, harmful=2, helpful=1)
        out = method.combine(grads, active, side, losses, ctx)
        perm = None if over["delta"] == "learned" else method._deviation.perm.tolist()
        exp_g, _ = ref.step(
            grads, active, side, ctx.fractional_epoch, rows=rows, meta=ctx.meta_grads,
            meta_active=ctx.meta_active, perm=perm,
        )  # fmt: skip
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)
        table = method._deviation.table
        for (row, k), v in ref.dtab.items():
            assert float(table[row, k]) == pytest.approx(v, abs=1e-12)
        assert (table[:, 0] == 0).all() and float(table.abs().max()) <= over.get("delta_max", 1.0)
        assert set(out.diagnostics) >= {"delta_mean", "delta_abs"}


def test_the_permuted_control_keeps_the_values_and_loses_their_owners():
    method = make_method("pmtrec", 3, delta="permuted", delta_lr=0.5)
    perms = {}
    for step in range(11):  # epochs 0, 1, 2 (steps_per_epoch 5, make_ctx step = 4 * step)
        grads, active, side, losses, ctx, _ = recurring_problem(step)
        ctx.generator = torch.Generator().manual_seed(100 + ctx.epoch)  # as the trainer: per epoch
        method.combine(grads, active, side, losses, with_meta(ctx, grads, step, harmful=2))
        perms.setdefault(ctx.epoch, method._deviation.perm.clone())
        assert torch.equal(method._deviation.perm, perms[ctx.epoch])  # one permutation per epoch
    assert len(perms) >= 2
    first, second = list(perms.values())[:2]
    assert not torch.equal(first, second)  # reseeded every epoch
    for perm in perms.values():  # a permutation within each side: users stay users
        assert sorted(perm.tolist()) == list(range(NUM_USERS + NUM_ITEMS))
        assert (perm[:NUM_USERS] < NUM_USERS).all() and (perm[NUM_USERS:] >= NUM_USERS).all()


def test_deviations_need_meta_gradients_and_round_trip():
    grads, active, side, losses, ctx, _ = recurring_problem(0)
    m = make_method("pmtrec", 3, delta="learned")
    with pytest.raises(ValueError, match="meta_split"):
        m.combine(grads, active, side, losses, ctx)
    m.combine(grads, active, side, losses, with_meta(ctx, grads, 0, harmful=1))
    m2 = make_method("pmtrec", 3, delta="learned")
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2._deviation.table, m._deviation.table)
    with pytest.raises(ValueError, match="deviations"):
        make_method("pmtrec", 3).load_state_dict(m.state_dict())


@pytest.mark.parametrize(
    "over",
    [
        {"usefulness": "meta_spsa", "spsa_every": 2, "spsa_eps": 0.5},
        {"usefulness": "meta_spsa", "spsa_every": 1, "focus_everywhere": True, "weight_mode": "shared"},
    ],
)
def test_spsa_scales_apply_per_window_as_in_the_loop_reference(over):
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **full_params(**over))
    assert method.meta_value_every == over["spsa_every"] and not method.needs_meta
    loss = 0.7
    for step in range(26):  # the first cycle perturbs nothing: no task has touched a side yet
        grads, active, side, losses, ctx, rows = recurring_problem(step)
        ctx.step = step
        if step % over["spsa_every"] == 0:
            loss -= 0.01 * (1 + step % 3)
            method.observe_meta_loss(loss, ctx)
        out = method.combine(grads, active, side, losses, ctx)
        applied = method._spsa.applied()
        exp_g, _ = ref.step(grads, active, side, ctx.fractional_epoch, rows=rows, spsa_applied=applied)
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)
    assert method._spsa.updates >= 3
    assert not torch.equal(method._spsa.theta, torch.zeros(2, 3, dtype=torch.float64))
    m2 = make_method("pmtrec", 3, **over)
    m2.load_state_dict(method.state_dict())
    torch.testing.assert_close(m2._spsa.theta, method._spsa.theta)
    with pytest.raises(ValueError, match="SPSA"):
        make_method("pmtrec", 3).load_state_dict(method.state_dict())


# ---------------------------------------------------------------------------------------
# v3 candidate (d): per-task second moments (moment_balance).
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over",
    [
        {"moment_balance": True, "moment_decay": 0.9},
        {"moment_balance": True, "moment_decay": 0.5, "weight_mode": "uniform", "align": False},
        {"moment_balance": True, "focus_everywhere": True, "gmb_mode": "entity_reduce", "rho": 1.0},
    ],
)
def test_task_moments_match_loop_reference(over):
    method = make_method("pmtrec", 3, **over)
    ref = ReferencePMTRec(3, **full_params(**over))
    for step in range(6):
        grads, active, side, losses, ctx, rows = recurring_problem(step)
        grads = grads * torch.tensor([1.0, 30.0, 0.1], dtype=grads.dtype).view(3, 1, 1)  # sizes differ
        out = method.combine(grads, active, side, losses, ctx)
        exp_g, _ = ref.step(grads, active, side, ctx.fractional_epoch, rows=rows)
        torch.testing.assert_close(out.combined, exp_g, rtol=1e-9, atol=1e-12)
    m2 = make_method("pmtrec", 3, **over)
    m2.load_state_dict(method.state_dict())
    torch.testing.assert_close(m2._moments.v, method._moments.v)
    with pytest.raises(ValueError, match="second moments"):
        make_method("pmtrec", 3).load_state_dict(method.state_dict())


def test_task_moments_bring_an_auxiliary_task_to_the_main_scale():
    """A task 100x the main task's size reaches the combination at the main task's RMS."""
    from pmtrec_lab.mtl._task_moments import TaskMoments

    tm = TaskMoments(0.9)
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(6)
    for _ in range(50):
        grads = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
        grads[1] *= 100.0
        out = tm.balance(grads, torch.ones(2, 6, dtype=torch.bool), rows, 10)
    ratio = out[1].pow(2).mean().sqrt() / out[0].pow(2).mean().sqrt()
    assert 0.5 < float(ratio) < 2.0
    torch.testing.assert_close(out[0], grads[0])  # the main task's gradient is untouched
