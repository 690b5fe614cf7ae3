"""Per-epoch diagnostics, bounded in memory and file size, saved as Parquet tables.

Schema (``<run>/diagnostics/``):
- ``epochs.parquet``: long table ``epoch, task, side, metric, value`` with metrics
  ``loss`` (side "all"), ``grad_norm`` (mean per-row norm of the raw task gradient over the rows
  the task touched), ``norm_ratio_before`` / ``norm_ratio_after`` (the method's task magnitude
  over the main task's, before and after balancing), ``conflict_fraction`` (share of touched
  rows whose task gradient has negative cosine with the main-task gradient; "raw" before any
  manipulation), ``conflict_fraction_combined`` (share whose combined gradient opposes the
  main-task gradient), ``beta`` (task "all"), ``task_weight`` (global weights, if any),
  ``count_spearman`` (Spearman correlation of the method's magnitude signal, PMTRec's
  ``magnitude_signal`` or else the raw row norm, with the entity's occurrences in the task's
  batch, within deciles of its occurrences over the epoch, on every ``PROBE_EVERY``-th step;
  only where counts vary; PMTRec v3 item 1), ``focus_share`` (share of the task's row-updates
  that Task Focusing reaches) and ``gmb_reduce`` (mean reduce-only GMB factor), side "all",
  ``norm_exponent`` (PMTRec's fitted frequency exponent) and ``usefulness_scale`` (v3's
  lambda_{k,s}, the epoch's last value) per side, and ``meta_cos`` (the mean cosine of the meta
  gradient with the task's), ``delta_mean`` / ``delta_abs`` (mean and mean absolute per-entity
  deviation of the step's rows) per side, averaged over the epoch's steps, where reported.
- ``cosine_hist.parquet``: ``epoch, task, side, kind, bin_left, bin_right, count``; kind "raw"
  (task gradient vs main), "after" (after the method's alignment, if reported), "combined"
  (combined gradient vs main, task "combined").
- ``entity_weights.parquet``: ``epoch, side, entity, task, weight, steps``: per-entity task
  weights averaged over the steps of the epoch that touched the entity, for all entities of a
  side (or a fixed, seeded cohort of ``max_entities``) at the chosen epochs.
Load everything with ``pmtrec_lab.train.run.load_diagnostics``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pmtrec_lab.paths import atomic_path

SIDES = ("user", "item")

#: the signal-frequency probe samples every this many steps (and the first of each epoch)
PROBE_EVERY = 10

#: per-task diagnostics [K] averaged over an epoch's steps (side "all")
TASK_MEANS = ("focus_share", "gmb_reduce")
#: per-(side, task) diagnostics [2, K]: the epoch's last value (state that evolves: PMTRec's
#: fitted exponent and usefulness scales lambda_{k,s})
SIDE_LAST = ("norm_exponent", "usefulness_scale")
#: per-(side, task) diagnostics [2, K] averaged over the steps where defined (not NaN): the
#: meta cosines that drive lambda and the per-entity deviations delta of the step's rows
SIDE_MEANS = ("meta_cos", "delta_mean", "delta_abs")


def group_ranks(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The rank of each value within its group (1 = smallest; ties get their average rank, as
    ``scipy.stats.rankdata``'s default), all groups in one sort."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    n = len(v)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    new_run = new_group.copy()
    new_run[1:] |= v[1:] != v[:-1]
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n) - 1
    run = np.cumsum(new_run) - 1
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    ranks = np.empty(n)
    ranks[order] = (starts[run] + ends[run]) / 2.0 - group_start + 1.0
    return ranks


def decile_spearman(signal: np.ndarray, count: np.ndarray, decile: np.ndarray) -> float:
    """Size-weighted mean over deciles of Spearman(signal, count), skipping deciles with fewer
    than 10 entities or constant counts or signal; NaN when none qualifies.

    Spearman's rho is the Pearson correlation of the within-decile average ranks. Every decile is
    ranked in one sort (``group_ranks``), and each decile's correlation is ``np.corrcoef`` of its
    ranks in the entities' order, which is what ``scipy.stats.spearmanr`` computes after its
    ``rankdata``: the result equals the former loop of ``spearmanr`` calls bit for bit
    (``tests/test_v3_diagnostics.py``) without scipy's per-call overhead (a loop over at most ten
    deciles, not over entities).
    """
    levels, group = np.unique(decile, return_inverse=True)
    rx, ry = group_ranks(signal, group), group_ranks(count, group)
    total, weight = 0.0, 0
    for g in range(len(levels)):
        sel = group == g
        n = int(sel.sum())
        if n < 10 or np.ptp(count[sel]) == 0 or np.ptp(signal[sel]) == 0:
            continue
        rho = np.corrcoef(np.column_stack((rx[sel], ry[sel])), rowvar=False)[1, 0]
        if np.isfinite(rho):
            total += float(rho) * n
            weight += n
    return total / weight if weight else float("nan")


def deciles_of(values: np.ndarray) -> np.ndarray:
    """Decile index (0..9) of each value (ties share a decile)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)[1:-1]))
    return np.searchsorted(edges, values, side="right")


class SignalFrequencyProbe:
    """How much a magnitude signal follows batch frequency (see ``count_spearman`` above).

    Every step adds its occurrence counts to per-entity epoch totals (index_add); every
    ``PROBE_EVERY``-th step keeps its (side, ids, counts, signal). At the epoch's end each kept
    step's Spearman correlation is computed within deciles of the totals (the entity's activity
    in that task over the epoch) and averaged over the kept steps.
    """

    def __init__(self, num_tasks: int, sizes: tuple[int, int]):
        self.k, self.sizes = num_tasks, sizes
        self.reset()

    def reset(self) -> None:
        self.totals = [torch.zeros(n, self.k, dtype=torch.float64) for n in self.sizes]
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, step_in_epoch: int, layout, signal: torch.Tensor) -> None:
        counts = layout.counts.detach().double().cpu()
        side, ids = layout.side.cpu(), layout.entity_ids.cpu()
        for s in range(2):  # two index_adds
            on = side == s
            self.totals[s].index_add_(0, ids[on], counts[on])
        if step_in_epoch % PROBE_EVERY == 0:
            sig = signal.detach().double().cpu().numpy()
            self.kept.append((side.numpy(), ids.numpy(), counts.numpy(), sig))

    def results(self) -> dict[tuple[int, int], float]:
        """(task, side) -> mean within-decile Spearman over the kept steps (where defined)."""
        deciles = [[deciles_of(self.totals[s][:, k].numpy()) for k in range(self.k)] for s in range(2)]
        out: dict[tuple[int, int], list[float]] = {}
        for side, ids, counts, signal in self.kept:
            for s in range(2):
                for k in range(self.k):
                    sel = (side == s) & (counts[:, k] > 0)
                    if sel.sum() < 20 or np.ptp(counts[sel, k]) == 0:
                        continue
                    rho = decile_spearman(signal[sel, k], counts[sel, k], deciles[s][k][ids[sel]])
                    if np.isfinite(rho):
                        out.setdefault((k, s), []).append(rho)
        return {key: float(np.mean(v)) for key, v in out.items()}


def default_weight_epochs(epochs: int) -> list[int]:
    """Epochs (counted from 1) whose per-entity weights are stored: 1, 2, 3, 5, 9, 17, ... (one
    after each power of two) and the last, so early changes and the end are both seen."""
    out, e = [1], 1
    while e < epochs:
        out.append(e + 1)
        e *= 2
    if epochs not in out:
        out.append(epochs)
    return out


def _cos(
    a: torch.Tensor, b: torch.Tensor, na: torch.Tensor | None = None, nb: torch.Tensor | None = None
) -> torch.Tensor:
    """Row-wise cosine of [..., E, D] with [E, D]; nan where either row is zero. ``na``, ``nb``:
    the rows' norms when the caller has them already."""
    dots = (a * b).sum(-1)
    na = a.norm(dim=-1) if na is None else na
    nb = b.norm(dim=-1) if nb is None else nb
    den = na * nb
    return torch.where(den > 0, dots / den.clamp_min(1e-30), torch.full_like(dots, float("nan")))


class DiagnosticsRecorder:
    def __init__(
        self,
        task_names: list[str],
        num_users: int,
        num_items: int,
        weight_epochs: list[int],
        max_entities: int,
        bins: int,
        seed: int,
    ):
        self.task_names = task_names
        self.k = len(task_names)
        self.sizes = (num_users, num_items)
        self.weight_epochs = set(weight_epochs)
        self.bins = bins
        gen = np.random.default_rng(seed)
        self.cohorts = [
            np.arange(n) if n <= max_entities else np.sort(gen.choice(n, max_entities, replace=False))
            for n in self.sizes
        ]
        self.rows: list[dict] = []
        self.hist_rows: list[pd.DataFrame] = []
        self.weight_frames: list[pd.DataFrame] = []
        self.probe = SignalFrequencyProbe(self.k, self.sizes)
        self._written: dict[str, int] = {}  # rows of each table in its file, as this recorder wrote it
        self._reset()

    def _reset(self) -> None:
        k, b = self.k, self.bins
        self.loss_sum = torch.zeros(k, dtype=torch.float64)
        self.steps = 0
        self.norm_sum = torch.zeros(2, k, dtype=torch.float64)
        self.norm_cnt = torch.zeros(2, k, dtype=torch.float64)
        self.conf = torch.zeros(2, k, dtype=torch.float64)
        self.conf_cnt = torch.zeros(2, k, dtype=torch.float64)
        self.conf_comb = torch.zeros(2, dtype=torch.float64)
        self.conf_comb_cnt = torch.zeros(2, dtype=torch.float64)
        self.hist = {kind: torch.zeros(2, k, b, dtype=torch.float64) for kind in ("raw", "after")}
        self.hist_comb = torch.zeros(2, b, dtype=torch.float64)
        self.ratio_sum: dict[str, torch.Tensor] = {}
        self.ratio_n: dict[str, int] = {}
        self.beta: float | None = None
        self.task_weight_sum: torch.Tensor | None = None
        self.w_sum = [torch.zeros(n, k, dtype=torch.float64) for n in self.sizes]
        self.w_cnt = [torch.zeros(n, dtype=torch.float64) for n in self.sizes]
        self.task_mean_sum: dict[str, torch.Tensor] = {}
        self.task_mean_n: dict[str, int] = {}
        self.side_last: dict[str, torch.Tensor] = {}
        self.side_mean_sum: dict[str, torch.Tensor] = {}
        self.side_mean_n: dict[str, torch.Tensor] = {}
        self.probe.reset()

    def _bin_index(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each value's bin among ``bins`` equal bins of [-1, 1] as ``torch.histc`` places it (the
        same float64 arithmetic, the right edge in the last bin) and whether it falls in one (NaN
        and values outside [-1, 1] do not, as histc ignores them)."""
        v = values.double()
        inside = (v >= -1.0) & (v <= 1.0)
        pos = ((torch.where(inside, v, -1.0) - -1.0) * self.bins / 2.0).long().clamp_max(self.bins - 1)
        return pos, inside

    def _histograms(self, cos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[2, C, bins] counts of ``cos`` [E, C] where ``mask`` [2, E, C] holds, per side and
        column (the tasks, or the one combined gradient)."""
        columns = cos.shape[1]
        pos, inside = self._bin_index(cos)
        keep = mask & inside[None]
        s_idx, e_idx, c_idx = keep.nonzero(as_tuple=True)
        flat = (s_idx * columns + c_idx) * self.bins + pos[e_idx, c_idx]
        counts = torch.bincount(flat, minlength=2 * columns * self.bins)
        return counts.view(2, columns, self.bins).double()

    def _accumulate_sides(self, norms, cos_raw, cos_comb, cos_after, active, side) -> None:
        """The per-(side, task) sums of one step, all (side, task) pairs at once: gradient norms,
        conflicts with the main task (cosine < 0) and cosine histograms, raw and after the
        method's alignment, and those of the combined gradient. The counts equal the per-pair
        loop's exactly (``tests/test_diagnostics_vectorized.py`` keeps that loop as the reference); the
        norm sums differ from it by float64 rounding only."""
        on_side = torch.stack([side == 0, side == 1])  # [2, E]
        m = on_side[:, :, None] & active[None]  # [2, E, K]
        self.norm_sum += torch.where(m, norms.double()[None], 0.0).sum(1)
        self.norm_cnt += m.sum(1).double()
        conflict_pairs = m & active[None, :, :1]  # with the main task on the same row
        conflict_pairs[:, :, 0] = False  # the main task against itself is no conflict
        valid = conflict_pairs & ~torch.isnan(cos_raw)[None]
        self.conf += (valid & (cos_raw < 0)[None]).sum(1).double()
        self.conf_cnt += valid.sum(1).double()
        self.hist["raw"] += self._histograms(cos_raw, valid)
        if cos_after is not None:
            after = cos_after.detach()
            self.hist["after"] += self._histograms(after, conflict_pairs & ~torch.isnan(after)[None])
        mc = on_side & active[None, :, 0] & ~torch.isnan(cos_comb)[None]  # [2, E]
        self.conf_comb += (mc & (cos_comb < 0)[None]).sum(1).double()
        self.conf_comb_cnt += mc.sum(1).double()
        self.hist_comb += self._histograms(cos_comb[:, None], mc[:, :, None])[:, 0]

    @torch.no_grad()
    def update(self, step, epoch: int) -> None:
        """Accumulate one step (a ``StepResult``)."""
        grads, lay, res = step.grads.detach(), step.layout, step.result
        self.loss_sum += step.losses.detach().double().cpu()
        active = lay.active
        side = lay.side
        task_norms = grads.norm(dim=-1)  # [K, E]
        norms = task_norms.T  # [E, K]
        self.probe.update(self.steps, lay, res.diagnostics.get("magnitude_signal", norms))
        self.steps += 1
        for key in TASK_MEANS:
            if key in res.diagnostics:
                v = res.diagnostics[key].detach().double().cpu()
                self.task_mean_sum[key] = self.task_mean_sum.get(key, 0) + v
                self.task_mean_n[key] = self.task_mean_n.get(key, 0) + 1
        for key in SIDE_LAST:
            if key in res.diagnostics:
                self.side_last[key] = res.diagnostics[key].detach().double().cpu()
        for key in SIDE_MEANS:
            if key in res.diagnostics:
                v = res.diagnostics[key].detach().double().cpu()
                ok = ~torch.isnan(v)
                self.side_mean_sum[key] = self.side_mean_sum.get(key, 0) + torch.where(ok, v, 0.0)
                self.side_mean_n[key] = self.side_mean_n.get(key, 0) + ok.double()
        main_norms = task_norms[:1]  # [1, E]: the main task's rows, computed once for both cosines
        cos_raw = _cos(grads, grads[0].unsqueeze(0), task_norms, main_norms).T  # [E, K]
        cos_comb = _cos(res.combined.detach(), grads[0], nb=main_norms[0])  # [E]
        cos_after = res.diagnostics.get("cos_main_after")
        self._accumulate_sides(norms, cos_raw, cos_comb, cos_after, active, side)
        for key in ("norm_ratio_before", "norm_ratio_after"):
            if key in res.diagnostics:
                v = res.diagnostics[key].detach().double().cpu()
                self.ratio_sum[key] = self.ratio_sum.get(key, 0) + v
                self.ratio_n[key] = self.ratio_n.get(key, 0) + 1
        if "beta" in res.diagnostics:
            self.beta = float(res.diagnostics["beta"])
        if "task_weights" in res.diagnostics:
            tw = res.diagnostics["task_weights"].detach().double().cpu()
            self.task_weight_sum = tw if self.task_weight_sum is None else self.task_weight_sum + tw
        ew = res.diagnostics.get("entity_weights")
        if ew is not None and epoch in self.weight_epochs:
            eu = lay.num_users
            ew = ew.detach().double().cpu()
            for s, ids, rows in ((0, lay.users, ew[:eu]), (1, lay.items, ew[eu:])):
                idx = ids.cpu()
                self.w_sum[s].index_add_(0, idx, rows)
                self.w_cnt[s].index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))

    def end_epoch(self, epoch: int) -> None:
        """Close ``epoch``: its long-format rows (per-task means, the combined direction's, the
        method's own diagnostics), its cosine histograms and, at a weight epoch, the per-entity
        weights, in this order (the order of the rows in the files), then start the next epoch."""
        self._add_task_rows(epoch)
        self._add_combined_rows(epoch)
        self._add_method_rows(epoch)
        self.hist_rows.extend(self._hist_frames(epoch))
        if epoch in self.weight_epochs:
            self._add_weight_frames(epoch)
        self._reset()

    def _add_task_rows(self, epoch: int) -> None:
        """Per task: the mean loss, per side the mean gradient norm, conflict fraction and ratios,
        and the mean task weight."""
        names = self.task_names
        add = self.rows.append
        for k, n in enumerate(names):
            add(
                {
                    "epoch": epoch,
                    "task": n,
                    "side": "all",
                    "metric": "loss",
                    "value": float(self.loss_sum[k] / max(1, self.steps)),
                }
            )
            for s, sname in enumerate(SIDES):
                if self.norm_cnt[s, k] > 0:
                    add(
                        {
                            "epoch": epoch,
                            "task": n,
                            "side": sname,
                            "metric": "grad_norm",
                            "value": float(self.norm_sum[s, k] / self.norm_cnt[s, k]),
                        }
                    )
                if k > 0 and self.conf_cnt[s, k] > 0:
                    add(
                        {
                            "epoch": epoch,
                            "task": n,
                            "side": sname,
                            "metric": "conflict_fraction",
                            "value": float(self.conf[s, k] / self.conf_cnt[s, k]),
                        }
                    )
                for key, tot in self.ratio_sum.items():
                    v = float(tot[s, k] / self.ratio_n[key])
                    if np.isfinite(v):
                        add({"epoch": epoch, "task": n, "side": sname, "metric": key, "value": v})
            if self.task_weight_sum is not None:
                add(
                    {
                        "epoch": epoch,
                        "task": n,
                        "side": "all",
                        "metric": "task_weight",
                        "value": float(self.task_weight_sum[k] / max(1, self.steps)),
                    }
                )

    def _add_combined_rows(self, epoch: int) -> None:
        """The combined direction's conflict fraction per side, the schedule's beta and the
        count-correlation probe's results."""
        names = self.task_names
        add = self.rows.append
        for s, sname in enumerate(SIDES):
            if self.conf_comb_cnt[s] > 0:
                add(
                    {
                        "epoch": epoch,
                        "task": "combined",
                        "side": sname,
                        "metric": "conflict_fraction_combined",
                        "value": float(self.conf_comb[s] / self.conf_comb_cnt[s]),
                    }
                )
        if self.beta is not None:
            add({"epoch": epoch, "task": "all", "side": "all", "metric": "beta", "value": self.beta})
        for (k, s), rho in sorted(self.probe.results().items()):
            row = {"epoch": epoch, "task": names[k], "side": SIDES[s], "metric": "count_spearman"}
            add({**row, "value": rho})

    def _add_method_rows(self, epoch: int) -> None:
        """The method's own per-task means and per-side tables (means, or the last value)."""
        names = self.task_names
        add = self.rows.append
        for key, tot in self.task_mean_sum.items():
            for k, n in enumerate(names):
                v = float(tot[k] / self.task_mean_n[key])
                if np.isfinite(v):
                    add({"epoch": epoch, "task": n, "side": "all", "metric": key, "value": v})
        per_side = dict(self.side_last)
        for key, tot in self.side_mean_sum.items():
            n_ok = self.side_mean_n[key]
            per_side[key] = torch.where(n_ok > 0, tot / n_ok.clamp_min(1), float("nan"))
        for key, table in per_side.items():
            for s, sname in enumerate(SIDES):
                for k, n in enumerate(names):
                    v = float(table[s, k])
                    if np.isfinite(v):
                        add({"epoch": epoch, "task": n, "side": sname, "metric": key, "value": v})

    def _hist_frames(self, epoch: int) -> list[pd.DataFrame]:
        """The epoch's cosine histograms: per auxiliary task and side, and the combined direction's."""
        names = self.task_names
        edges = np.linspace(-1.0, 1.0, self.bins + 1)
        frames = []
        for kind, h in self.hist.items():
            for s, sname in enumerate(SIDES):
                for k in range(1, self.k):
                    if h[s, k].sum() > 0:
                        frames.append(self._hist_frame(epoch, names[k], sname, kind, edges, h[s, k]))
        for s, sname in enumerate(SIDES):
            if self.hist_comb[s].sum() > 0:
                frames.append(
                    self._hist_frame(epoch, "combined", sname, "combined", edges, self.hist_comb[s])
                )
        return frames

    def _add_weight_frames(self, epoch: int) -> None:
        """The mean weight per entity of each side's cohort and task over ``epoch`` (a weight epoch)."""
        names = self.task_names
        for s, sname in enumerate(SIDES):
            cohort = self.cohorts[s]
            cnt = self.w_cnt[s][cohort].numpy()
            seen = cnt > 0
            if not seen.any():
                continue
            ids = cohort[seen]
            w = (self.w_sum[s][cohort][seen] / self.w_cnt[s][cohort][seen].unsqueeze(1)).numpy()
            self.weight_frames.append(
                pd.DataFrame(
                    {
                        "epoch": np.int32(epoch),
                        "side": sname,
                        "entity": np.repeat(ids, self.k).astype(np.int64),
                        "task": np.tile(np.array(names), len(ids)),
                        "weight": w.reshape(-1).astype(np.float32),
                        "steps": np.repeat(cnt[seen], self.k).astype(np.int32),
                    }
                )
            )

    @staticmethod
    def _hist_frame(epoch, task, side, kind, edges, counts) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "epoch": epoch,
                "task": task,
                "side": side,
                "kind": kind,
                "bin_left": edges[:-1],
                "bin_right": edges[1:],
                "count": counts.numpy().astype(np.int64),
            }
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tables = {
            "epochs": pd.DataFrame(self.rows, columns=["epoch", "task", "side", "metric", "value"]),
            "cosine_hist": pd.concat(self.hist_rows, ignore_index=True)
            if self.hist_rows
            else pd.DataFrame(columns=["epoch", "task", "side", "kind", "bin_left", "bin_right", "count"]),
            "entity_weights": pd.concat(self.weight_frames, ignore_index=True)
            if self.weight_frames
            else pd.DataFrame(columns=["epoch", "side", "entity", "task", "weight", "steps"]),
        }
        for name, df in tables.items():
            path = directory / f"{name}.parquet"
            if self._written.get(name) == len(df) and path.is_file():
                continue  # the tables only grow: the same length is the same table (weights, mostly)
            with atomic_path(path, suffix=".parquet") as tmp:
                df.to_parquet(tmp, index=False)
            self._written[name] = len(df)

    def state(self) -> dict:
        """What ``last.pt`` keeps to resume the diagnostics. The per-epoch tables are first joined
        into one per kind (the same rows in the same order, so ``save`` writes the same files):
        kept as hundreds of small frames, encoding them grew with every epoch and made writing
        ``last.pt`` a quarter of a 40-epoch PMTRec run on lastfm."""
        self.hist_rows = _joined(self.hist_rows)
        self.weight_frames = _joined(self.weight_frames)
        return {"rows": self.rows, "hist": self.hist_rows, "weights": self.weight_frames}

    def load_state(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.hist_rows = list(state["hist"])
        self.weight_frames = list(state["weights"])


def _joined(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """``frames`` as one frame (a list of it; unchanged when there are fewer than two)."""
    return frames if len(frames) < 2 else [pd.concat(frames, ignore_index=True)]
