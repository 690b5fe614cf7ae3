"""The mechanism behind harmful auxiliary tasks (PMTRec v3, issue item 3): does the auxiliary
pressure shrink the main task's effective Adam step on shared rows?

Adam divides each coordinate's step by sqrt(v), v the moving average of the squared *total*
gradient. Where auxiliary gradients are much larger than the main task's (2-21x on amazon and
ml-100k), v is theirs, and the main task's part of an update, lr * g^0 / (sqrt(v_hat) + eps),
shrinks even if its direction is kept. This script trains MF twice from the same initialization
on the same batches, once single-task and once with equal weights (EW), and at chosen steps
reports, over the user and item rows the main task touched:

- ``main_step``: the median of ||lr * g_x^0 / (sqrt(v_hat_x) + eps)||, the main task's effective
  step on row x (g^0 its representation gradient, v_hat Adam's bias-corrected second moment of
  the row after the step);
- ``aux/main``: over those rows that also have an auxiliary gradient (``aux share`` of them),
  the median ratio of the auxiliary tasks' summed gradient norm to the main task's;
- the ratio of EW's ``main_step`` to single-task's, measured in the same run.

    .venv/bin/python benchmarks/adam_pressure.py [--datasets amazon,ciao] [--at 1,100,300,600]
"""

from __future__ import annotations

import argparse

import torch

from pmtrec_lab.config import DEFAULT_DIM, load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.mtl import StepContext, make_method
from pmtrec_lab.train import build_model
from pmtrec_lab.train.step import train_step

METHODS = ("single-task", "ew")


def run(dataset: str, data_dir: str | None, method_name: str, at: list[int], lr: float) -> dict:
    """``{(step, side): (median main step, median aux/main norm ratio, aux share)}``."""
    cfg = load_config(
        base={"data": {"name": dataset, "data_dir": data_dir}, "encoder": {"name": "mf", "dim": DEFAULT_DIM}}
    )
    ds = load_dataset(cfg.data.name, cfg.data.data_dir)
    model = build_model(cfg, ds)  # seeded: both methods start from the same initialization
    tasks = list(model.tasks)
    names = [t.name for t in tasks]
    steps = tasks[0].steps_for_epoch()
    cpu = torch.device("cpu")
    method = make_method(method_name, len(tasks))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tables = (model.encoder.user_embedding.weight, model.encoder.item_embedding.weight)
    beta2, eps = opt.defaults["betas"][1], opt.defaults["eps"]
    gen = torch.Generator().manual_seed(0)  # the same batches for both methods
    out: dict = {}
    for step in range(max(at) + 1):
        if step % steps == 0:
            for t in tasks:
                t.start_epoch(steps, gen)
        batches = [t.next_batch(gen) for t in tasks]
        ctx = StepContext(step, step // steps, steps, names, torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        res = train_step(model.encoder, tasks, batches, method, ctx, cfg.optim.l2, cpu)
        opt.step()
        if step not in at:
            continue
        lay = res.layout
        g0 = res.grads[0]
        aux = res.grads[1:].norm(dim=2).sum(dim=0)
        main_norm = g0.norm(dim=1)
        has_main = lay.active[:, 0] & (main_norm > 0)
        for s, (side, table) in enumerate((("user", tables[0]), ("item", tables[1]))):
            sel = has_main & (lay.side == s)
            if int(sel.sum()) < 10:
                continue
            state = opt.state[table]
            t = float(state["step"])
            v_hat = state["exp_avg_sq"][lay.entity_ids[sel]] / (1 - beta2**t)
            main_step = (lr * g0[sel] / (v_hat.sqrt() + eps)).norm(dim=1)
            with_aux = aux[sel] > 0
            ratio = aux[sel][with_aux] / main_norm[sel][with_aux]
            median_ratio = float(ratio.median()) if ratio.numel() else float("nan")
            out[(step, side)] = (float(main_step.median()), median_ratio, float(with_aux.double().mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="amazon,ciao")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--at", default="1,100,300,600", help="steps at which to measure")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    at = sorted({int(s) for s in args.at.split(",")})
    print("Main task's effective Adam step on the rows it touched (median), EW against single-task")
    print(f"{'dataset':<8} {'step':>5} {'side':<5} {'single main_step':>17} {'EW main_step':>13} "
          f"{'EW/single':>10} {'EW aux/main':>12} {'aux share':>10}")  # fmt: skip
    for dataset in args.datasets.split(","):
        single, ew = (run(dataset, args.data_dir, m, at, args.lr) for m in METHODS)
        for key in sorted(set(single) & set(ew)):
            (s_step, _, _), (e_step, e_ratio, share) = single[key], ew[key]
            print(
                f"{dataset:<8} {key[0]:>5} {key[1]:<5} {s_step:>17.3e} {e_step:>13.3e} "
                f"{e_step / s_step:>10.3f} {e_ratio:>12.2f} {share:>10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
