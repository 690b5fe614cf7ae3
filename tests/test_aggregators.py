"""Property tests of the gradient-manipulation aggregators (MGDA, PCGrad, CAGrad, IMTL-G,
Aligned-MTL, Nash-MTL, DB-MTL): each checked against the problem it solves, not magic numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from pmtrec_lab.mtl import MethodParamsError, aggregate, make_method
from pmtrec_lab.mtl.aligned_mtl import aligned_mtl_matrix
from pmtrec_lab.mtl.base import StepContext
from pmtrec_lab.mtl.dbmtl import dbmtl_transform
from pmtrec_lab.mtl.imtl import imtl_g_weights
from pmtrec_lab.mtl.mgda import mgda_weights
from pmtrec_lab.mtl.nash_mtl import nash_mtl_weights
from pmtrec_lab.mtl.pcgrad import pcgrad_coefficients

ALL = ["mgda", "pcgrad", "cagrad", "imtl-g", "aligned-mtl", "nash-mtl", "db-mtl"]
PERMUTATION_INVARIANT = ["mgda", "cagrad", "imtl-g", "aligned-mtl", "nash-mtl", "db-mtl"]


def random_grads(seed: int, k: int, d: int, conflict: bool = False, dtype=torch.float64) -> torch.Tensor:
    """Random task gradients with different scales; ``conflict`` pushes them against task 0."""
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(k, d)) * rng.lognormal(sigma=1.0, size=(k, 1))
    if conflict:
        G[1:] -= G[:1] * rng.uniform(0.5, 1.5, size=(k - 1, 1))
    return torch.tensor(G, dtype=dtype)


def ctx(seed: int = 0) -> StepContext:
    return StepContext(
        step=0, epoch=0, steps_per_epoch=10, task_names=["main", "a", "b"],
        generator=torch.Generator().manual_seed(seed),
    )


def scale(G: torch.Tensor) -> float:
    return float((G * G).sum(1).max())


# ------------------------------------------------------------------------------------- MGDA


def assert_mgda_kkt(G: torch.Tensor, w: np.ndarray, tol: float = 1e-9) -> None:
    """alpha on the simplex, d = G^T alpha: <g_k, d> >= ||d||^2 - tol, equality where alpha_k > 0."""
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
    d = torch.tensor(w) @ G
    dots, nd = (G @ d).numpy(), float(d @ d)
    s = scale(G)
    assert np.all(dots >= nd - tol * s)
    support = w > 1e-9
    np.testing.assert_allclose(dots[support], nd, atol=tol * s, rtol=0)


@pytest.mark.parametrize("conflict", [False, True])
@pytest.mark.parametrize("k,d", [(3, 5), (5, 20), (8, 4), (12, 30), (6, 2)])
@pytest.mark.parametrize("seed", range(6))
def test_mgda_kkt(seed, k, d, conflict):
    G = random_grads(seed, k, d, conflict)
    w, present, _ = mgda_weights(G)
    assert present.all()
    assert_mgda_kkt(G, w)
    np.testing.assert_allclose(aggregate("mgda", G).numpy(), w @ G.numpy(), atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_mgda_two_task_closed_form(seed):
    G = random_grads(seed, 2, 7, conflict=seed % 2 == 0)
    g1, g2 = G.numpy()
    gamma = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0, 1)
    w, _, _ = mgda_weights(G)
    np.testing.assert_allclose(w, [gamma, 1 - gamma], atol=1e-12)
    assert_mgda_kkt(G, w)


def test_mgda_gradient_inside_hull():
    G2 = random_grads(3, 2, 6, conflict=True)
    inside = 0.3 * G2[0] + 0.7 * G2[1]
    G3 = torch.cat([G2, inside[None]])
    w3, _, _ = mgda_weights(G3)
    assert_mgda_kkt(G3, w3)
    np.testing.assert_allclose(aggregate("mgda", G3).numpy(), aggregate("mgda", G2).numpy(), atol=1e-10)
    # a gradient that is itself the min-norm point of the hull takes all the weight
    d = aggregate("mgda", G2)
    G4 = torch.cat([G2, d[None], 2 * G2[:1]])
    w4, _, _ = mgda_weights(G4)
    assert_mgda_kkt(G4, w4)
    np.testing.assert_allclose(torch.tensor(w4) @ G4, d, atol=1e-10)


def test_mgda_frank_wolfe_and_normalizations():
    G = random_grads(1, 5, 9, conflict=True)
    exact = aggregate("mgda", G)
    # The paper's Frank-Wolfe converges sublinearly: suboptimal, within its duality gap.
    excess = []
    for iters in (250, 5000):
        fw = aggregate("mgda", G, solver="frank-wolfe", max_iter=iters)
        gap = float(fw @ fw - (G @ fw).min())
        excess.append(float(fw @ fw - exact @ exact))
        assert -1e-12 <= excess[-1] <= gap
    assert excess[1] < excess[0]
    # "l2": the min-norm point of the unit gradients
    U = G / torch.linalg.vector_norm(G, dim=1, keepdim=True)
    w, _, _ = mgda_weights(U)
    np.testing.assert_allclose(aggregate("mgda", G, normalization="l2"), w @ U.numpy(), atol=1e-10)
    losses = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.1], dtype=torch.float64)
    Gl = G / losses[:, None]
    w, _, _ = mgda_weights(Gl)
    out = aggregate("mgda", G, normalization="loss", losses=losses)
    np.testing.assert_allclose(out, w @ Gl.numpy(), atol=1e-10)
    with pytest.raises(ValueError, match="losses"):
        aggregate("mgda", G, normalization="loss", losses=-losses)


def test_mgda_positive_homogeneous():
    G = random_grads(4, 4, 10, conflict=True)
    np.testing.assert_allclose(aggregate("mgda", 3.5 * G), 3.5 * aggregate("mgda", G), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------- PCGrad


def pcgrad_reference(G: torch.Tensor, seed: int) -> torch.Tensor:
    """The paper's loop on D-dimensional vectors, with the same random orders."""
    gen = torch.Generator().manual_seed(seed)
    K = G.shape[0]
    out = torch.zeros_like(G[0])
    for i in range(K):
        gi = G[i].clone()
        for j in torch.randperm(K, generator=gen).tolist():
            if j != i and (dot := gi @ G[j]) < 0:
                gi = gi - dot / (G[j] @ G[j]) * G[j]
        out += gi
    return out


@pytest.mark.parametrize("seed", range(8))
def test_pcgrad_two_tasks_do_not_conflict(seed):
    G = random_grads(seed, 2, 6, conflict=True)
    G[1] *= -torch.sign(G[0] @ G[1])
    assert G[0] @ G[1] < 0
    out = aggregate("pcgrad", G, seed=seed)
    assert torch.all(G @ out >= -1e-10 * scale(G))


def test_pcgrad_no_conflict_is_sum():
    G = torch.rand(4, 12, dtype=torch.float64)  # nonnegative entries: no pair conflicts
    np.testing.assert_allclose(aggregate("pcgrad", G), G.sum(0), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_matches_vector_loop(seed):
    G = random_grads(seed, 5, 11, conflict=True)
    np.testing.assert_allclose(aggregate("pcgrad", G, seed=seed), pcgrad_reference(G, seed), atol=1e-10)


def test_pcgrad_three_tasks_runs():
    # With K = 3 the projected sum may still conflict with a task: only check that it runs.
    G = torch.tensor([[1.0, 0.0], [-0.9, 0.2], [-0.9, -0.3]], dtype=torch.float64)
    out = aggregate("pcgrad", G, seed=0)
    assert out.shape == (2,) and torch.isfinite(out).all()
    C = pcgrad_coefficients(G, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(C.sum(0) @ G.numpy(), out, atol=1e-12)


# ----------------------------------------------------------------------------------- CAGrad


def cagrad_primal(G: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Independent solve of max_{||d - g0|| <= c||g0||} min_k <g_k, d> in D dimensions (SLSQP,
    epigraph form: max t s.t. <g_k, d> >= t, ||d - g0||^2 <= c^2 ||g0||^2), in units max ||g_k|| = 1."""
    unit = np.linalg.norm(G, axis=1).max()
    G = G / unit
    K, D = G.shape
    g0 = G.mean(0)
    r = c * np.linalg.norm(g0)
    cons = [
        {"type": "ineq", "fun": lambda x: G @ x[:D] - x[D],
         "jac": lambda x: np.hstack([G, -np.ones((K, 1))])},
        {"type": "ineq", "fun": lambda x: r * r - np.sum((x[:D] - g0) ** 2),
         "jac": lambda x: np.hstack([-2 * (x[:D] - g0), 0.0])},
    ]
    x0 = np.hstack([g0, (G @ g0).min()])
    res = minimize(lambda x: -x[D], x0, jac=lambda x: np.hstack([np.zeros(D), -1.0]), constraints=cons,
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
    d = res.x[:D]  # SLSQP may stop on a line-search warning at full precision: check feasibility
    assert np.linalg.norm(d - g0) <= r * (1 + 1e-6)
    return d * unit, (G @ d).min() * unit**2


@pytest.mark.parametrize("c", [0.1, 0.4, 0.8])
@pytest.mark.parametrize("seed", range(8))
def test_cagrad_solves_its_problem(seed, c):
    k = 2 + seed % 4
    G = random_grads(seed, k, 3 + seed, conflict=seed % 2 == 1)
    d = aggregate("cagrad", G, c=c, rescale=0).numpy()
    Gn = G.numpy()
    g0 = Gn.mean(0)
    n = np.linalg.norm(Gn, axis=1).max()
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-9)  # feasible
    d_ref, v_ref = cagrad_primal(Gn, c)
    assert (Gn @ d).min() >= v_ref - 1e-7 * n**2  # at least as good as the primal solve
    np.testing.assert_allclose(d, d_ref, atol=1e-4 * n)


def test_cagrad_rescale_and_c0():
    G = random_grads(2, 3, 8, conflict=True)
    d0 = aggregate("cagrad", G, c=0.4, rescale=0)
    np.testing.assert_allclose(aggregate("cagrad", G, c=0.4, rescale=1), d0 / 1.16, rtol=1e-6)
    np.testing.assert_allclose(aggregate("cagrad", G, c=0.4, rescale=2), d0 / 1.4, rtol=1e-6)
    np.testing.assert_allclose(aggregate("cagrad", G, c=0.0), G.mean(0), atol=1e-12)


# ----------------------------------------------------------------------------------- IMTL-G


@pytest.mark.parametrize("conflict", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_imtl_g_equal_projections(seed, conflict):
    k = 2 + seed % 4
    G = random_grads(seed, k, 10, conflict)
    alpha, _ = imtl_g_weights(G)
    assert abs(alpha.sum() - 1) < 1e-10
    g = aggregate("imtl-g", G)
    U = G / torch.linalg.vector_norm(G, dim=1, keepdim=True)
    proj = (U @ g).numpy()
    np.testing.assert_allclose(proj, proj[0], rtol=1e-8, atol=1e-10 * float(torch.linalg.vector_norm(g)))
    # the paper's closed form alpha_{2:K} = g_1 U^T (D U^T)^{-1}
    if k > 1:
        Gn, Un = G.numpy(), U.numpy()
        Dm, Um = Gn[0] - Gn[1:], Un[0] - Un[1:]
        rest = np.linalg.solve((Dm @ Um.T).T, Um @ Gn[0])
        np.testing.assert_allclose(alpha, np.hstack([1 - rest.sum(), rest]), rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------ Aligned-MTL


@pytest.mark.parametrize("seed", range(6))
def test_aligned_mtl_condition_number_one_and_scale(seed):
    k = 2 + seed % 4
    G = random_grads(seed, k, 12, conflict=seed % 2 == 0)
    B = torch.tensor(aligned_mtl_matrix(G))
    A = B @ G  # aligned task gradients
    sigma_min = float(torch.linalg.svdvals(G).min())
    # orthogonal, all of norm sigma_min(G) (Algorithm 1: rescaled by the smallest singular value)
    np.testing.assert_allclose((A @ A.T).numpy(), sigma_min**2 * np.eye(k), atol=1e-9 * scale(G))
    np.testing.assert_allclose(aggregate("aligned-mtl", G), A.sum(0), atol=1e-10)


def test_aligned_mtl_rank_deficient_and_scale_modes():
    G = random_grads(0, 5, 3)  # K > D: rank 3
    B = torch.tensor(aligned_mtl_matrix(G))
    A = B @ G
    s = torch.linalg.svdvals(G)
    lam = A @ A.T
    eig = torch.linalg.eigvalsh(lam)
    np.testing.assert_allclose(eig[-3:], float(s[2]) ** 2, rtol=1e-8)  # = lambda_R on the range
    np.testing.assert_allclose(eig[:2], 0, atol=1e-9 * scale(G))
    for mode, ref in [("median", float(np.median(s.numpy() ** 2))), ("rmse", float((s**2).mean()))]:
        Am = torch.tensor(aligned_mtl_matrix(G, scale_mode=mode)) @ G
        np.testing.assert_allclose(torch.linalg.eigvalsh(Am @ Am.T)[-3:], ref, rtol=1e-8)


# --------------------------------------------------------------------------------- Nash-MTL


@pytest.mark.parametrize("conflict", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_nash_mtl_fixed_point(seed, conflict):
    k = 2 + seed % 5
    G = random_grads(seed, k, 15, conflict)
    alpha, _, converged = nash_mtl_weights(G)
    assert converged and np.all(alpha > 0)
    M = (G @ G.T).numpy()
    np.testing.assert_allclose(alpha * (M @ alpha), 1.0, atol=1e-8)
    d = aggregate("nash-mtl", G, max_norm=0.0)  # no clipping: ||d||^2 = sum_k alpha_k (M alpha)_k = K
    np.testing.assert_allclose(float(d @ d), k, rtol=1e-8)
    clipped = aggregate("nash-mtl", G, max_norm=1.0)
    assert float(torch.linalg.vector_norm(clipped)) <= 1.0
    np.testing.assert_allclose(clipped / torch.linalg.vector_norm(clipped), d / np.sqrt(k), atol=1e-9)


def test_nash_mtl_update_weights_every_and_state():
    m = make_method("nash-mtl", 3, update_weights_every=2)
    shape = (3, 4, 5)
    g1 = random_grads(1, 3, 20).reshape(shape)
    g2 = random_grads(2, 3, 20).reshape(shape)
    L = torch.ones(3, dtype=torch.float64)
    m.combine(g1, None, None, L, ctx())
    r2 = m.combine(g2, None, None, L, ctx())
    a1, _, _ = nash_mtl_weights(g1.reshape(3, -1))
    np.testing.assert_allclose(r2.diagnostics["raw_task_weights"], a1, rtol=1e-12)  # reused
    state = m.state_dict()
    m2 = make_method("nash-mtl", 3, update_weights_every=2)
    m2.load_state_dict(state)
    r3a, r3b = m.combine(g2, None, None, L, ctx()), m2.combine(g2, None, None, L, ctx())
    torch.testing.assert_close(r3a.combined, r3b.combined)
    a2, _, _ = nash_mtl_weights(g2.reshape(3, -1))
    np.testing.assert_allclose(r3a.diagnostics["raw_task_weights"], a2, rtol=1e-12)  # recomputed


# ----------------------------------------------------------------------------------- DB-MTL


def test_dbmtl_normalizes_to_max_norm():
    G = random_grads(5, 4, 9, conflict=True)
    losses = torch.tensor([0.3, 2.0, 0.05, 1.0], dtype=torch.float64)
    alpha, ghat = dbmtl_transform(G, losses)
    torch.testing.assert_close(ghat, G / (losses[:, None] + 1e-8))  # gradient of log(L + eps)
    terms = torch.linalg.vector_norm(alpha[:, None] * ghat, dim=1)
    top = float(torch.linalg.vector_norm(ghat, dim=1).max())
    torch.testing.assert_close(terms, torch.full_like(terms, top))
    torch.testing.assert_close(aggregate("db-mtl", G, losses=losses), alpha @ ghat)
    np.testing.assert_allclose(aggregate("db-mtl", 2 * G), 2 * aggregate("db-mtl", G), rtol=1e-12)


@pytest.mark.parametrize("ema", ["norm", "grad"])
def test_dbmtl_moving_average_and_state(ema):
    beta, sigma = 0.9, 0.5
    m = make_method("db-mtl", 3, ema=ema)
    shape = (3, 4, 5)
    gs = [random_grads(s, 3, 20).reshape(shape) for s in range(3)]
    L = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    ghats = [g.reshape(3, -1) / (L[:, None] + 1e-8) for g in gs]
    ref = torch.zeros(3, 20, dtype=torch.float64) if ema == "grad" else torch.zeros(3, dtype=torch.float64)
    for t, (g, gh) in enumerate(zip(gs[:2], ghats[:2]), start=1):
        res = m.combine(g, None, None, L, ctx())
        cur = gh if ema == "grad" else torch.linalg.vector_norm(gh, dim=1)
        ref = cur + beta / t**sigma * (ref - cur)  # LibMTL's update, from zero
        norms = torch.linalg.vector_norm(ref, dim=1) if ema == "grad" else ref
        alpha = norms.max() / norms
        expect = alpha @ (ref if ema == "grad" else gh)
        torch.testing.assert_close(res.combined.reshape(-1), expect)
        w = 1 / (L + 1e-8)
        torch.testing.assert_close(res.head_weights, 3 * w / w.sum())
    m2 = make_method("db-mtl", 3, ema=ema)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(
        m.combine(gs[2], None, None, L, ctx()).combined, m2.combine(gs[2], None, None, L, ctx()).combined
    )


# ------------------------------------------------------------------------------ all methods


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariance(name):
    G = random_grads(7, 5, 13, conflict=True)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out, out_p = aggregate(name, G), aggregate(name, G[perm])
    np.testing.assert_allclose(out_p, out, rtol=1e-6, atol=1e-7 * float(torch.linalg.vector_norm(out)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_zero_row_k1_dtype(name, dtype):
    G = random_grads(8, 4, 10, conflict=True, dtype=dtype)
    G[2] = 0
    out = aggregate(name, G)
    assert out.dtype == dtype and out.device == G.device and out.shape == (10,)
    assert torch.isfinite(out).all() and torch.linalg.vector_norm(out) > 0
    assert torch.isfinite(aggregate(name, torch.zeros(3, 10, dtype=dtype))).all()
    one = aggregate(name, G[:1])
    assert one.dtype == dtype and torch.isfinite(one).all()
    cos = float(one @ G[0]) / float(torch.linalg.vector_norm(one) * torch.linalg.vector_norm(G[0]))
    assert cos > 1 - 1e-5  # one task: its own direction
    if name in ("mgda", "imtl-g", "nash-mtl", "aligned-mtl", "cagrad"):
        # the zero task is left out: same update as without it
        ref = aggregate(name, G[[0, 1, 3]])
        tol = 1e-4 if dtype == torch.float32 else 1e-8
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * float(torch.linalg.vector_norm(ref)))


@pytest.mark.parametrize("name", ALL)
def test_aggregate_deterministic(name):
    G = random_grads(9, 4, 16, conflict=True)
    torch.testing.assert_close(aggregate(name, G, seed=3), aggregate(name, G, seed=3), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_make_method_combine(name):
    K, E, D = 3, 6, 4
    m = make_method(name, K)
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(K, E, D, generator=gen)
    active = torch.rand(E, K, generator=gen) > 0.3
    side = torch.tensor([0, 0, 0, 1, 1, 1])
    losses = torch.rand(K, generator=gen) + 0.1
    res = m.combine(grads, active, side, losses, ctx())
    assert res.combined.shape == (E, D) and res.head_weights.shape == (K,)
    assert res.combined.dtype == grads.dtype and res.head_weights.dtype == grads.dtype
    assert torch.isfinite(res.combined).all() and torch.isfinite(res.head_weights).all()
    if "raw_task_weights" in res.diagnostics:  # methods with implied task weights
        raw = res.diagnostics["raw_task_weights"]
        expect = (raw @ grads.reshape(K, -1)).reshape(E, D)
        if name == "nash-mtl":  # clipped to max_norm = 1
            expect = expect / torch.linalg.vector_norm(expect)
        torch.testing.assert_close(res.combined, expect)
        torch.testing.assert_close(res.head_weights.mean(), torch.tensor(1.0))


@pytest.mark.parametrize(
    "name,bad",
    [
        ("mgda", {"normalization": "l3"}), ("mgda", {"tol": -1.0}), ("mgda", {"max_iter": 0}),
        ("mgda", {"solver": "cvx"}), ("cagrad", {"c": -0.1}), ("cagrad", {"rescale": 3}),
        ("aligned-mtl", {"scale_mode": "max"}), ("nash-mtl", {"update_weights_every": 0}),
        ("nash-mtl", {"max_norm": -1.0}), ("db-mtl", {"beta": 1.0}), ("db-mtl", {"beta_sigma": -1}),
        ("db-mtl", {"ema": "both"}),
    ],
)
def test_bad_parameter_values(name, bad):
    with pytest.raises(MethodParamsError, match=f"method.params.{next(iter(bad))}"):
        make_method(name, 3, **bad)


@pytest.mark.parametrize("name", ALL)
def test_unknown_parameter(name):
    with pytest.raises(MethodParamsError, match="not_a_parameter"):
        make_method(name, 3, not_a_parameter=1)
    with pytest.raises(TypeError):
        aggregate(name, torch.randn(3, 4), not_a_parameter=1)


@pytest.mark.parametrize(
    "name,bad",
    [("mgda", {"tol": 0.0}), ("cagrad", {"c": float("nan")}), ("aligned-mtl", {"scale_mode": 1}),
     ("nash-mtl", {"max_iter": 0}), ("db-mtl", {"eps": 0.0})],
)
def test_aggregator_bad_values(name, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        aggregate(name, torch.randn(3, 4), **bad)


@pytest.mark.parametrize("seed", range(4))
def test_mgda_kkt_float32(seed):
    G = random_grads(seed, 6, 300, conflict=True, dtype=torch.float32)
    w, _, _ = mgda_weights(G)
    assert_mgda_kkt(G.double(), w, tol=1e-5)  # the Gramian is computed in float32


def test_aligned_mtl_median_of_an_even_rank_is_the_lower_median():
    """The official code (and torchjd) scales by ``torch.median`` of the singular values squared,
    which for an even count is the lower of the two middle values, not their mean."""
    G = random_grads(3, 4, 16)  # rank 4: an even number of eigenvalues
    s2 = torch.linalg.svdvals(G.double()) ** 2
    lower = float(torch.median(s2))
    assert lower == float(torch.sort(s2).values[1]) and lower != float(np.median(s2.numpy()))
    Am = torch.tensor(aligned_mtl_matrix(G, scale_mode="median")) @ G
    np.testing.assert_allclose(torch.linalg.eigvalsh(Am @ Am.T), lower, rtol=1e-8)
