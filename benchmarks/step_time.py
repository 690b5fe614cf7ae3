"""Step time of the training core and of every weighting method, as ratios over a plain EW step.

Setting (issue 3/4 benchmark): ciao, the library's default dim (``pmtrec_lab.config.DEFAULT_DIM``,
64), main batch 2048, tasks rec + social:trust + item_label:category; LightGCN 3 layers; all
measured in one run on the same model and batches.

Prints, per encoder: the per-entity step split into sampling, forward, task gradients,
combination and backward, next to a plain EW step (``sum(losses).backward()``); per method: its
full step time over the plain EW step, and for gradient-manipulation methods the cost of their
K-backward parameter form (one backward per task through the encoder, aggregation on the
flattened parameter gradients).

    .venv/bin/python benchmarks/step_time.py [--dataset ciao] [--steps 20] [--encoders mf,lightgcn,hetero]
        [--device cuda] [--v3] [--analytic]

``--v3`` adds PMTRec v3's pieces (``V3_VARIANTS``) on the dataset with its meta split, each with
its meta work inside the timed step: the meta batch and its gradient rows for ``Need.META_GRADIENTS``
variants, and the meta loss on all meta pairs every ``spsa_every`` steps for ``meta_spsa``
(PMTRec v3's cost hypothesis H4: at most 1.6x the plain EW step on MF, 1.25x on LightGCN).

``--analytic`` times EW and PMTRec with ``optim.task_gradients: analytic`` (closed-form task
gradients) beside autograd, alternately on the same batches.

``--device cuda`` moves the model there (the graph encoders' ``auto`` path is then torch.sparse)
and synchronizes before every step's clock reads (the phase split inside a step is not
synchronized there); it also prints the peak GPU memory per encoder.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pmtrec_lab.config import DEFAULT_DIM, load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.mtl import AGGREGATORS, METHODS, Need, StepContext, make_method
from pmtrec_lab.tasks.meta import MetaPairs
from pmtrec_lab.train import build_model
from pmtrec_lab.train.step import layout_step, plain_ew_step, train_step
from pmtrec_lab.train.trainer import meta_loss_on

#: PMTRec v3's pieces, each alone on v2 (``pmtrec-v2`` with these parameters)
V3_VARIANTS: dict[str, dict] = {
    "v2": {},
    "fitted+focus": {"norm_mode": "fitted", "focus_everywhere": True},
    "entity_reduce": {"gmb_mode": "entity_reduce", "rho": 1.0},
    "meta_cos": {"usefulness": "meta_cos"},
    "meta_spsa (every 25)": {"usefulness": "meta_spsa", "spsa_every": 25},
    "delta learned": {"delta": "learned"},
    "moment_balance": {"moment_balance": True},
}

PHASES = ("sampling", "forward", "task_gradients", "combine", "backward")


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work finished (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_setup(dataset: str, encoder: str, data_dir: str | None, propagation: str, meta_split: bool = False):
    cfg = load_config(
        base={
            "data": {"name": dataset, "data_dir": data_dir},
            "encoder": {"name": encoder, "dim": DEFAULT_DIM, "num_layers": 3, "propagation": propagation},
            "tasks": {"include": ["social:trust", "item_label:category"]} if dataset == "ciao" else {},
            "optim": {"batch_size": 2048},
        }
    )
    ds = load_dataset(cfg.data.name, cfg.data.data_dir, meta_split=meta_split)
    model = build_model(cfg, ds)
    return cfg, model, ds


def time_v3(model, tasks, params: dict, batches, cpu, meta: MetaPairs) -> tuple[float, float]:
    """Median step time of ``pmtrec-v2`` with ``params``, its meta work included, and of the plain
    EW step on the same batches, measured alternately (as ``time_method``)."""
    method = make_method("pmtrec-v2", len(tasks), **params)
    names = [t.name for t in tasks]
    meta_all = meta.fixed_negatives(torch.Generator().manual_seed(3))
    sizes = (meta.item_of_user.numel(), meta.num_items)
    times, plain = [], []
    for i, (b, sample_s) in enumerate(batches):
        ctx = StepContext(i, 0, len(batches), names, torch.Generator().manual_seed(i), num_entities=sizes)
        model.zero_grad(set_to_none=True)
        t0 = clock(cpu)
        if Need.META_LOSS in method.needs and i % method.meta_value_every == 0:
            method.observe_meta_loss(meta_loss_on(model, meta_all), ctx)
        mb = None
        if Need.META_GRADIENTS in method.needs:
            mb = meta.for_batches(b, torch.Generator().manual_seed(i))
        train_step(model.encoder, tasks, b, method, ctx, 1e-4, cpu, meta=mb)
        times.append(clock(cpu) - t0 + sample_s)
        plain.append(time_plain_ew(model, tasks, [(b, sample_s)], cpu))
    return statistics.median(times), statistics.median(plain)


def fresh_batches(tasks, seed: int, n: int):
    gen = torch.Generator().manual_seed(seed)
    steps = tasks[0].steps_for_epoch()
    for t in tasks:
        t.start_epoch(steps, gen)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        b = [t.next_batch(gen) for t in tasks]
        out.append((b, time.perf_counter() - t0))
    return out


def time_method(
    model, tasks, method_name: str, batches, cpu, analytic: bool = False
) -> tuple[float, float, dict[str, float]]:
    """Median step time of the method and of the plain EW step, measured alternately on the
    same batches (so load from other processes hits both alike), and the method's phases."""
    method = make_method(method_name, len(tasks))
    names = [t.name for t in tasks]
    phases: dict[str, float] = {}
    times, plain = [], []
    for i, (b, sample_s) in enumerate(batches):
        ctx = StepContext(i, 0, len(batches), names, torch.Generator().manual_seed(i))
        model.zero_grad(set_to_none=True)
        t0 = clock(cpu)
        train_step(model.encoder, tasks, b, method, ctx, 1e-4, cpu, timings=phases, analytic=analytic)
        times.append(clock(cpu) - t0 + sample_s)
        phases["sampling"] = phases.get("sampling", 0.0) + sample_s
        plain.append(time_plain_ew(model, tasks, [(b, sample_s)], cpu))
    return (
        statistics.median(times),
        statistics.median(plain),
        {k: v / len(batches) for k, v in phases.items()},
    )


def time_plain_ew(model, tasks, batches, cpu) -> float:
    times = []
    for b, sample_s in batches:
        model.zero_grad(set_to_none=True)
        t0 = clock(cpu)
        plain_ew_step(model.encoder, tasks, b, 1e-4, cpu)
        times.append(clock(cpu) - t0 + sample_s)
    return statistics.median(times)


def time_k_backward(model, tasks, agg: str, batches, cpu) -> float:
    """The parameter form: K backward passes through the encoder, aggregate flattened grads."""
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    times = []
    gen = torch.Generator().manual_seed(0)
    for b, sample_s in batches:
        t0 = time.perf_counter()
        lay = layout_step(b, cpu)
        zu, zi = model.encoder.encode(lay.users, lay.items)
        flat = []
        for j, (t, bb) in enumerate(zip(tasks, b)):
            loss = t.loss(zu, zi, lay.local[j], bb)
            g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat.append(
                torch.cat(
                    [(x if x is not None else torch.zeros_like(p)).reshape(-1) for x, p in zip(g, params)]
                )
            )
        out = AGGREGATORS[agg](torch.stack(flat), generator=gen)
        off = 0
        for p in params:
            n = p.numel()
            p.grad = out[off : off + n].view_as(p)
            off += n
        times.append(time.perf_counter() - t0 + sample_s)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ciao")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--encoders", default="mf,lightgcn,hetero")
    ap.add_argument("--methods", default="all", help="comma list, or 'all', or 'none'")
    ap.add_argument("--propagation", default="auto")
    ap.add_argument("--device", default="cpu", help="where the model and the step run (cpu, cuda)")
    ap.add_argument("--v3", action="store_true", help="also time PMTRec v3's pieces (meta split on)")
    ap.add_argument(
        "--analytic", action="store_true", help="also time EW and PMTRec with closed-form task gradients"
    )
    args = ap.parse_args()
    cpu = torch.device(args.device)  # the step's device (named cpu for the functions' signatures)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(cpu) if cpu.type == "cuda" else "cpu"
    print(f"threads={torch.get_num_threads()} dataset={args.dataset} steps={args.steps} device={where}")
    for enc in args.encoders.split(","):
        cfg, model, ds = make_setup(args.dataset, enc, args.data_dir, args.propagation, meta_split=args.v3)
        model = model.to(cpu)
        if cpu.type == "cuda":
            torch.cuda.reset_peak_memory_stats(cpu)
        tasks = list(model.tasks)
        batches = fresh_batches(tasks, 0, args.steps + 3)[3:]  # the first draws warm caches
        warm = fresh_batches(tasks, 1, 3)
        time_method(model, tasks, "ew", warm, cpu)
        ew_ours, ew_plain, phases = time_method(model, tasks, "ew", batches, cpu)
        print(f"\n== encoder {enc} ({', '.join(t.name for t in tasks)}) ==")
        print(f"plain EW step (sum(losses).backward()): {ew_plain * 1e3:.1f} ms")
        print(f"per-entity EW step: {ew_ours * 1e3:.1f} ms  ratio {ew_ours / ew_plain:.2f}x")
        print("  phases (ms): " + ", ".join(f"{p}={phases.get(p, 0) * 1e3:.1f}" for p in PHASES))
        if cpu.type == "cuda":
            print(f"  peak GPU memory: {torch.cuda.max_memory_allocated(cpu) / 2**20:.0f} MB")
        if args.analytic:
            print(f"  {'task gradients':<28}{'step ms':>9}{'/ plain EW':>12}{'task_gradients ms':>20}")
            for name in ("ew", "pmtrec"):
                for mode in ("autograd", "analytic"):
                    med, plain, ph = time_method(
                        model, tasks, name, batches, cpu, analytic=mode == "analytic"
                    )
                    label, grads_ms = f"{name} {mode}", ph["task_gradients"] * 1e3
                    print(f"  {label:<28}{med * 1e3:>9.1f}{med / plain:>11.2f}x{grads_ms:>20.1f}")
        if args.v3:
            meta = MetaPairs(ds.split.meta, ds.num_users, ds.num_items, getattr(tasks[0], "observed", None))
            print(f"  {'PMTRec v3 piece (on v2)':<28}{'step ms':>9}{'/ plain EW':>12}")
            for label, params in V3_VARIANTS.items():
                med, plain = time_v3(model, tasks, params, batches, cpu, meta)
                print(f"  {label:<28}{med * 1e3:>9.1f}{med / plain:>11.2f}x")
        if args.methods == "none":
            continue
        names = sorted(METHODS) if args.methods == "all" else args.methods.split(",")
        names = [n for n in names if not n.startswith("test-")]
        print(f"  {'method':<28}{'step ms':>9}{'/ plain EW':>12}{'K-backward / plain EW':>24}")
        for name in names:
            med, plain, _ = time_method(model, tasks, name, batches, cpu)
            kb = ""
            if name in AGGREGATORS and enc == "mf":
                kb = f"{time_k_backward(model, tasks, name, batches, cpu) / plain:.2f}x"
            print(f"  {name:<28}{med * 1e3:>9.1f}{med / plain:>11.2f}x{kb:>24}")


if __name__ == "__main__":
    main()
