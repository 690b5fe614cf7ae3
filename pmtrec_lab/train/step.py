"""One training step with per-entity task gradients (steps 1 and 6 of the method document).

The representation-gradient pattern: run the encoder once on the step's touched users and
items, detach the representations into leaves, compute each task's loss on the leaves and its
gradient with respect to every touched row (K small autograd calls that traverse only the task
heads), let the weighting method combine them per entity, then back-propagate the combined
gradient through the encoder once. Task heads get ``head_weights[k] * grad(L_k)``. L2
regularization acts on the batch's layer-0 rows directly, outside the combination.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from pmtrec_lab.errors import TrainingDivergedError
from pmtrec_lab.mtl.base import CombineResult, StepContext, WeightingMethod
from pmtrec_lab.tasks.base import Task, TaskBatch
from pmtrec_lab.tasks.link import bpr
from pmtrec_lab.tasks.meta import MetaBatch


@dataclass
class StepLayout:
    """The union of touched rows and each task's role indices into it."""

    users: torch.Tensor  # unique touched user ids
    items: torch.Tensor  # unique touched item ids
    local: list[dict[str, torch.Tensor]]  # per task: role -> position in users/items
    active: torch.Tensor  # [E, K] bool, users first then items
    side: torch.Tensor  # [E] 0 user, 1 item
    counts: torch.Tensor  # [E, K] float32: occurrences of each row in each task's batch

    @property
    def entity_ids(self) -> torch.Tensor:
        """[E]: each row's id within its side (users first, then items)."""
        return torch.cat([self.users, self.items])

    @property
    def num_users(self) -> int:
        return int(self.users.numel())


def layout_step(batches: list[TaskBatch], device: torch.device) -> StepLayout:
    """Map every task's global ids to positions in the step's sorted unique users/items."""
    user_parts = [t for b in batches for t in b.users()]
    item_parts = [t for b in batches for t in b.items()]
    empty = torch.zeros(0, dtype=torch.int64)
    all_u = torch.cat(user_parts) if user_parts else empty
    all_i = torch.cat(item_parts) if item_parts else empty
    users, inv_u = torch.unique(all_u, return_inverse=True)
    items, inv_i = torch.unique(all_i, return_inverse=True)
    eu, ei, k = users.numel(), items.numel(), len(batches)
    counts = torch.zeros(k, eu + ei, dtype=torch.float32)  # task-major while filled
    local: list[dict[str, torch.Tensor]] = []
    off_u = off_i = 0
    for j, b in enumerate(batches):
        loc: dict[str, torch.Tensor] = {}
        for role in b.user_roles:
            n = b.roles[role].numel()
            loc[role] = inv_u[off_u : off_u + n]
            off_u += n
            counts[j].index_add_(0, loc[role], torch.ones(n))
        for role in b.item_roles:
            n = b.roles[role].numel()
            loc[role] = inv_i[off_i : off_i + n]
            off_i += n
            counts[j].index_add_(0, eu + loc[role], torch.ones(n))
        local.append({r: v.to(device) for r, v in loc.items()})
    side = torch.cat([torch.zeros(eu, dtype=torch.int64), torch.ones(ei, dtype=torch.int64)])
    counts = counts.T.contiguous()
    return StepLayout(
        users.to(device), items.to(device), local, (counts > 0).to(device), side.to(device), counts.to(device)
    )


@dataclass
class StepResult:
    losses: torch.Tensor  # [K] detached
    grads: torch.Tensor  # [K, E, D]
    layout: StepLayout
    result: CombineResult


def task_gradients(
    zu: torch.Tensor,
    zi: torch.Tensor,
    tasks: list[Task],
    batches: list[TaskBatch],
    layout: StepLayout,
    analytic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor | None]]]:
    """Each task's loss and gradient w.r.t. every touched row: (losses [K], grads [K, E, D], head grads).

    Every task reads its own detached leaf copy of the representations, so ONE backward call over
    the sum of the losses yields each task's gradient separately (in its leaves) at the cost of a
    single autograd traversal of the task heads. With ``analytic`` (``optim.task_gradients:
    analytic``), tasks with closed-form gradients (``Task.loss_and_grads``: BPR link tasks, label
    heads) skip autograd; the others are differentiated as before. The two agree to float rounding
    (``tests/test_analytic_gradients.py``), not bit for bit.
    """
    if analytic:
        return _analytic_task_gradients(zu, zi, tasks, batches, layout)
    eu = zu.shape[0]
    leaves_u = [zu.detach().requires_grad_(bool(b.user_roles)) for b in batches]
    leaves_i = [zi.detach().requires_grad_(bool(b.item_roles)) for b in batches]
    losses_list = [
        task.loss(lu, li, layout.local[j], batch)
        for j, (task, batch, lu, li) in enumerate(zip(tasks, batches, leaves_u, leaves_i))
    ]
    inputs: list[torch.Tensor] = []
    slots: list[tuple[int | None, int | None, list[int]]] = []
    for j, task in enumerate(tasks):
        iu = ii = None
        if batches[j].user_roles:
            iu = len(inputs)
            inputs.append(leaves_u[j])
        if batches[j].item_roles:
            ii = len(inputs)
            inputs.append(leaves_i[j])
        params = task.head_parameters()
        slots.append((iu, ii, list(range(len(inputs), len(inputs) + len(params)))))
        inputs.extend(params)
    losses = torch.stack(losses_list)
    g = torch.autograd.grad(losses.sum(), inputs, allow_unused=True)
    d = zu.shape[1] if zu.dim() == 2 and zu.shape[0] else zi.shape[1]
    rows = []
    head_grads: list[list[torch.Tensor | None]] = []
    for iu, ii, hp in slots:
        gu = g[iu] if iu is not None and g[iu] is not None else zu.new_zeros(eu, d)
        gi = g[ii] if ii is not None and g[ii] is not None else zi.new_zeros(zi.shape[0], d)
        rows.append(torch.cat([gu, gi]))
        head_grads.append([g[h] for h in hp])
    return losses.detach(), torch.stack(rows), head_grads


def _analytic_task_gradients(
    zu: torch.Tensor,
    zi: torch.Tensor,
    tasks: list[Task],
    batches: list[TaskBatch],
    layout: StepLayout,
) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor | None]]]:
    """``task_gradients`` with closed-form gradients where a task has them (autograd for the rest),
    written straight into one [K, E, D] block (no per-task tables to concatenate)."""
    eu = zu.shape[0]
    d = zu.shape[1] if zu.dim() == 2 and zu.shape[0] else zi.shape[1]
    grads = zu.new_zeros(len(tasks), eu + zi.shape[0], d)
    losses: list[torch.Tensor | None] = [None] * len(tasks)
    head_grads: list[list[torch.Tensor | None]] = [[] for _ in tasks]
    with torch.no_grad():
        for j, (task, batch) in enumerate(zip(tasks, batches)):
            if task.analytic:
                loss, heads = task.loss_and_grads(
                    zu, zi, layout.local[j], batch, grads[j, :eu], grads[j, eu:]
                )
                losses[j], head_grads[j] = loss, list(heads)
    rest = [j for j, task in enumerate(tasks) if not task.analytic]
    if rest:
        sub = _sublayout(layout, rest)
        losses_r, grads_r, heads_r = task_gradients(
            zu, zi, [tasks[j] for j in rest], [batches[j] for j in rest], sub
        )
        for r, j in enumerate(rest):
            losses[j], head_grads[j] = losses_r[r], heads_r[r]
            grads[j] = grads_r[r]
    return torch.stack(losses).detach(), grads, head_grads


def _sublayout(layout: StepLayout, keep: list[int]) -> StepLayout:
    """The layout of a subset of the step's tasks (same rows, those tasks' roles)."""
    return replace(
        layout,
        local=[layout.local[j] for j in keep],
        active=layout.active[:, keep],
        counts=layout.counts[:, keep],
    )


def meta_gradients(
    zu: torch.Tensor, zi_all: torch.Tensor, items: torch.Tensor, layout: StepLayout, meta: MetaBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """The meta loss's gradient per step row ([E, D], users first) and the rows it touched ([E]).

    The loss is the mean BPR term of the meta triples on detached copies of the representations
    (``zi_all``: the representations of ``items``, the step's items and the meta items), so
    nothing reaches the parameters. Rows of meta items outside the step have no row: no task
    gradient there could be weighted.
    """
    eu = layout.num_users
    d = zu.shape[1] if zu.shape[0] else zi_all.shape[1]
    if len(meta) == 0:
        n = eu + layout.items.numel()
        return zu.new_zeros(n, d), torch.zeros(n, dtype=torch.bool, device=zu.device)
    leaf_u = zu.detach().requires_grad_(True)
    leaf_i = zi_all.detach().requires_grad_(True)
    dev = zu.device
    u = torch.searchsorted(layout.users, meta.users.to(dev))
    p = torch.searchsorted(items, meta.pos.to(dev))
    q = torch.searchsorted(items, meta.neg.to(dev))
    loss = bpr(leaf_u[u], leaf_i[p], leaf_i[q])
    gu, gi = torch.autograd.grad(loss, [leaf_u, leaf_i])
    at_step = torch.searchsorted(items, layout.items)
    touched_u = torch.zeros(eu, dtype=torch.bool, device=dev)
    touched_u[u] = True
    touched_i = torch.zeros(items.numel(), dtype=torch.bool, device=dev)
    touched_i[p] = True
    touched_i[q] = True
    return torch.cat([gu, gi[at_step]]), torch.cat([touched_u, touched_i[at_step]])


def check_finite(
    losses: torch.Tensor, combined: torch.Tensor, grads: torch.Tensor, names: list[str], step: int
) -> None:
    """Raise TrainingDivergedError naming the task and step when a loss or gradient is NaN/inf."""
    if bool(torch.isfinite(losses).all()) and bool(torch.isfinite(combined).all()):
        return
    bad_loss = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    bad_grad = (~torch.isfinite(grads).flatten(1).all(1)).nonzero().flatten().tolist()
    bad = bad_loss or bad_grad
    what = "loss" if bad_loss else "gradient"
    who = ", ".join(names[i] for i in bad) if bad else "the combined gradient"
    raise TrainingDivergedError(f"non-finite {what} at step {step} in task(s): {who}")


def train_step(
    encoder: torch.nn.Module,
    tasks: list[Task],
    batches: list[TaskBatch],
    method: WeightingMethod,
    ctx: StepContext,
    l2: float,
    device: torch.device,
    timings: dict[str, float] | None = None,
    meta: MetaBatch | None = None,
    analytic: bool = False,
) -> StepResult:
    """Forward, per-entity task gradients, combination, one backward. Gradients are accumulated
    into ``.grad``; the caller zeroes them before and steps the optimizer after. ``timings``, if
    given, accumulates seconds per phase (forward, task_gradients, combine, backward).
    ``meta``: the step's meta triples, for a method needing ``Need.META_GRADIENTS``; their loss's
    gradient per row reaches the method as ``ctx.meta_grads`` and is never applied. The method sees
    the step's entity ids and occurrence counts, and the table sizes (``ctx.num_entities``; from the
    encoder's ``num_users`` / ``num_items`` when the caller left them unset). ``analytic``: closed-form
    task gradients where tasks have them (``task_gradients``)."""
    tick = _ticker(timings)
    layout = layout_step(batches, device)
    if meta is None:
        zu, zi = encoder.encode(layout.users, layout.items)
    else:  # the meta items are encoded with the step's items, in one call
        items = torch.unique(torch.cat([layout.items, meta.pos.to(device), meta.neg.to(device)]))
        zu, zi_all = encoder.encode(layout.users, items)
        zi = zi_all[torch.searchsorted(items, layout.items)]
    tick("forward")
    losses, grads, head_grads = task_gradients(zu, zi, tasks, batches, layout, analytic=analytic)
    tick("task_gradients")
    sizes = ctx.num_entities
    if sizes is None and hasattr(encoder, "num_users") and hasattr(encoder, "num_items"):
        sizes = (int(encoder.num_users), int(encoder.num_items))  # the tables' sizes, as the trainer's
    ctx = replace(ctx, counts=layout.counts, entity_ids=layout.entity_ids, num_entities=sizes)
    if meta is not None:
        meta_grads, meta_active = meta_gradients(zu, zi_all, items, layout, meta)
        ctx = replace(ctx, meta_grads=meta_grads, meta_active=meta_active)
        tick("meta_gradients")
    result = method.combine(grads, layout.active, layout.side, losses, ctx)
    tick("combine")
    check_finite(losses, result.combined, grads, [t.name for t in tasks], ctx.step)
    eu = layout.num_users
    outputs: list[torch.Tensor] = []
    upstream: list[torch.Tensor | None] = []
    if eu:
        outputs.append(zu)
        upstream.append(result.combined[:eu])
    if zi.shape[0]:
        outputs.append(zi)
        upstream.append(result.combined[eu:])
    main = batches[0]
    if l2 > 0:
        eu0, ei0 = encoder.layer0(torch.cat(main.users()).to(device), torch.cat(main.items()).to(device))
        batch = main.roles[main.user_roles[0] if main.user_roles else main.item_roles[0]].numel()
        outputs.append(l2 * (eu0.pow(2).sum() + ei0.pow(2).sum()) / 2 / batch)
        upstream.append(None)
    torch.autograd.backward(outputs, upstream)
    hw = result.head_weights
    for j, task in enumerate(tasks):
        for p, g in zip(task.head_parameters(), head_grads[j]):
            if g is not None:
                p.grad = g * hw[j] if p.grad is None else p.grad + g * hw[j]
    tick("backward")
    return StepResult(losses=losses, grads=grads, layout=layout, result=result)


def _ticker(timings: dict[str, float] | None) -> Callable[[str], None]:
    if timings is None:
        return lambda name: None
    last = [time.perf_counter()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - last[0]
        last[0] = now

    return tick


def plain_ew_step(
    encoder: torch.nn.Module,
    tasks: list[Task],
    batches: list[TaskBatch],
    l2: float,
    device: torch.device,
) -> torch.Tensor:
    """Reference step: ``sum(losses).backward()`` on the same model (benchmarks, tests)."""
    layout = layout_step(batches, device)
    zu, zi = encoder.encode(layout.users, layout.items)
    total = sum(t.loss(zu, zi, layout.local[j], b) for j, (t, b) in enumerate(zip(tasks, batches)))
    main = batches[0]
    if l2 > 0:
        eu0, ei0 = encoder.layer0(torch.cat(main.users()).to(device), torch.cat(main.items()).to(device))
        batch = main.roles[main.user_roles[0]].numel()
        total = total + l2 * (eu0.pow(2).sum() + ei0.pow(2).sum()) / 2 / batch
    total.backward()
    return total.detach()
