"""DB-MTL: log-transformed losses plus gradient-magnitude balancing to the largest task norm."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from pmtrec_lab.mtl._checks import check_losses, check_matrix, check_state_keys
from pmtrec_lab.mtl._flat import as_weights
from pmtrec_lab.mtl.base import CombineResult, FlatGradientMethod, register, register_aggregator
from pmtrec_lab.mtl.params import MethodParams


class DBMTLParams(MethodParams):
    """DB-MTL's hyper-parameters (Lin et al., arXiv:2308.12029; LibMTL's defaults)."""

    beta: float = Field(
        0.9, ge=0, lt=1, description="moving-average coefficient beta of the gradients' average h_k"
    )
    beta_sigma: float = Field(
        0.5, ge=0, description="decay exponent sigma of the step-t coefficient beta / t^sigma"
    )
    eps: float = Field(1e-8, gt=0, description="epsilon of the log transform log(L_k + eps)")
    ema: Literal["norm", "grad"] = Field(
        "norm",
        description="average the per-task norms ||ghat_k|| ('norm', see the deviation) or the "
        "gradient vectors (LibMTL's 'grad')",
    )


def _row_norms(X: torch.Tensor) -> torch.Tensor:
    """||X_k|| per row, rescaled by max |X| when the plain norm over- or underflows X's dtype."""
    n = torch.linalg.vector_norm(X, dim=1)
    top = n.max()
    if not torch.isfinite(top) or top < 1e4 * torch.finfo(X.dtype).tiny:
        s = X.abs().max()
        if torch.isfinite(s) and s > 0:
            n64 = torch.linalg.vector_norm((X / s).double(), dim=1) * s.double()
            n = n64.clamp(max=torch.finfo(X.dtype).max).to(X.dtype)
    return n


def _max_norm_scale(norms: torch.Tensor) -> torch.Tensor:
    """alpha_k = max_j n_j / n_k (0 where n_k = 0)."""
    top = norms.max()
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > 0, top / safe, torch.zeros_like(norms))


def dbmtl_transform(
    G: torch.Tensor, losses: torch.Tensor | None = None, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha [K], Ghat [K, D]): Ghat_k = g_k / (L_k + eps) is the gradient of log(L_k + eps),
    and alpha_k Ghat_k has norm max_j ||Ghat_j|| for every task with a nonzero gradient."""
    check_matrix(G, "db-mtl")
    DBMTLParams.build("db-mtl", {"eps": eps})  # the bounds live in one place
    L = check_losses("db-mtl", losses, G.shape[0], positive=False)
    ghat = G * as_weights(1.0 / (L + eps), G)[:, None]
    alpha = _max_norm_scale(_row_norms(ghat))
    return alpha, ghat


@register_aggregator("db-mtl")
def dbmtl(
    G: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    losses: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """DB-MTL aggregator for one step (no moving average): ``sum_k alpha_k g_k / (L_k + eps)``
    with every term of the max norm. ``losses`` default to ones. See ``DBMTL``."""
    alpha, ghat = dbmtl_transform(G, losses, eps)
    return alpha @ ghat


@register
class DBMTL(FlatGradientMethod):
    """DB-MTL: Lin, Jiang, Ye, Zhang, Zhang, Kwok, Zhang, "Dual-Balancing Multi-Task Learning",
    arXiv:2308.12029, 2023 (reference implementation: LibMTL ``DB_MTL``).

    Loss-scale balancing: each task's loss is log-transformed, so its gradient is
    g_k / (L_k + eps). Gradient-magnitude balancing: a moving average of those gradients is
    kept, and each task's term is scaled to the largest norm among the tasks,
    alpha_k = max_j ||h_j|| / ||h_k||; the update is sum_k alpha_k h_k. The moving average
    follows LibMTL: at step t (from 1), h <- ghat + beta / t^beta_sigma (h - ghat), h_0 = 0.

    Hyper-parameters: ``DBMTLParams`` (beta = 0.9 and beta_sigma = 0.5, LibMTL's defaults;
    eps = 1e-8, LibMTL's log(L + 1e-8); ema, see below).

    Deviation (``ema``): the rows of the flattened representation block are the step's touched
    entities, different every step, so a moving average of the gradient *vectors* mixes
    unrelated entities (and the block's size changes). With ``ema="norm"`` (default) the
    moving average is kept of the per-task norms ||ghat_k|| instead, alpha_k is computed from
    them and applied to this step's ghat_k. ``ema="grad"`` is LibMTL's vector average (reset to
    zero whenever the block's shape changes): meaningful only when the block's rows are the
    same entities every step (full-batch training).

    ``head_weights``: the log transform scales task k's head gradient by 1 / (L_k + eps); these
    weights are scaled to mean 1 (relative loss balancing kept, EW-comparable scale).
    The moving-average state is in ``state_dict``.
    """

    name = "db-mtl"
    summary: ClassVar[str] = (
        "DB-MTL (Lin et al., 2023): log-losses and gradients rescaled to the largest norm"
    )
    Params: ClassVar[type[MethodParams]] = DBMTLParams
    hparams: DBMTLParams

    def __init__(self, num_tasks: int, params: MethodParams | None = None, **kwargs: Any):
        super().__init__(num_tasks, params, **kwargs)
        self.step = 0
        self.buffer: torch.Tensor | None = None  # [K] norms ("norm") or [K, E*D] gradients ("grad")

    def _combine(self, grads, active, side, losses, ctx) -> CombineResult:
        k, e, d = grads.shape
        flat = grads.reshape(k, e * d)
        p = self.hparams
        L = check_losses("db-mtl", losses, k, positive=False)
        ghat = flat * as_weights(1.0 / (L + p.eps), flat)[:, None]
        self.step += 1
        b = p.beta / self.step**p.beta_sigma
        if p.ema == "norm":
            cur = _row_norms(ghat.detach()).to("cpu", torch.float64)
            buf = self.buffer if self.buffer is not None and self.buffer.shape == cur.shape else None
            buf = torch.zeros_like(cur) if buf is None else buf
            self.buffer = cur + b * (buf - cur)
            alpha = _max_norm_scale(self.buffer).to(dtype=flat.dtype, device=flat.device)
            combined = alpha @ ghat
        else:
            cur = ghat.detach()
            buf = self.buffer
            if buf is None or buf.shape != cur.shape:
                buf = torch.zeros_like(cur)
            buf = buf.to(dtype=cur.dtype, device=cur.device)
            self.buffer = cur + b * (buf - cur)
            alpha = _max_norm_scale(_row_norms(self.buffer))
            combined = alpha @ self.buffer
        w = 1.0 / (L + p.eps)
        head = as_weights(w * (k / w.sum()), flat)
        return CombineResult(
            combined=combined.reshape(e, d),
            head_weights=head,
            diagnostics={"task_weights": head.detach(), "norm_scale": alpha.detach()},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "buffer": None if self.buffer is None else self.buffer.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_keys(self.name, state, (), optional=("step", "buffer"))
        self.step = int(state.get("step", 0))
        buf = state.get("buffer")
        self.buffer = None if buf is None else torch.as_tensor(buf).clone()
