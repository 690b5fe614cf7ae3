"""Short training runs for the GPU check (``benchmarks/gpu_check.sh``): LightGCN and hetero on ciao.

Each encoder trains for 3 epochs (seed 0, EW with ciao's default tasks, lr 3e-3, dim 64, 3 layers;
hetero with ``encoder.split_relations={trust: 0.5}``, so that trust edges pass messages)
on ``--device``, and its test NDCG@20 is compared with the CPU torch.sparse run of the same
configuration: read from ``benchmarks/gpu_check_reference.json`` (committed; ``--write-reference``
writes it from CPU runs here) or, with ``--run-reference``, trained in this call. Agreement:
``|difference| <= 0.002``. Each result is written to ``OUT/train_<encoder>.json`` as soon as it
exists, with the seconds per epoch and (on CUDA) the peak GPU memory.

    python benchmarks/gpu_train_check.py --device cuda --data-dir DATA --out OUT [--run-reference]
    python benchmarks/gpu_train_check.py --device cpu --data-dir DATA --out OUT --write-reference
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmtrec_lab.config import SHORT_RUN_LR, load_config  # noqa: E402
from pmtrec_lab.train import train  # noqa: E402

REFERENCE = ROOT / "benchmarks" / "gpu_check_reference.json"
TOLERANCE = 0.002
ENCODERS = ("lightgcn", "hetero")


def config(encoder: str, device: str, data_dir: str, epochs: int, propagation: str):
    # hetero: half of the trust rows pass messages (else, with trust and category both predicted
    # by active tasks, its graph would be the interaction graph and the run LightGCN's)
    split = {"trust": 0.5} if encoder == "hetero" else {}
    return load_config(
        base={
            # pinned: the settings of the committed reference (switched to new defaults after it)
            "data": {"name": "ciao", "data_dir": data_dir, "aux_holdout": 0},
            "encoder": {
                "name": encoder, "dim": 64, "num_layers": 3, "propagation": propagation,
                "split_relations": split,
            },
            "optim": {"lr": SHORT_RUN_LR, "epochs": epochs, "task_gradients": "autograd"},
            "diagnostics": {"enabled": False},
            "seed": 0,
            "device": device,
            "progress": "none",
        }
    )


def run_one(encoder: str, device: str, data_dir: str, epochs: int, propagation: str, out: Path) -> dict:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run = train(config(encoder, device, data_dir, epochs, propagation), out, resume=False)
    seconds = time.perf_counter() - start
    result = {
        "encoder": encoder,
        "device": device,
        "propagation": propagation,
        "epochs": epochs,
        "test_ndcg@20": run.metrics["test"]["ndcg@20"],
        "best_epoch": run.metrics["best_epoch"],
        "seconds": seconds,
        "seconds_per_epoch": [float(s) for s in run.history["seconds"]],
    }
    if device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--run-reference", action="store_true", help="train the CPU torch.sparse runs too")
    ap.add_argument("--write-reference", action="store_true", help=f"write {REFERENCE.name} from CPU runs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.write_reference:
        ref = {
            enc: run_one(enc, "cpu", args.data_dir, args.epochs, "sparse", out / "runs" / f"{enc}-cpu-sparse")
            for enc in ENCODERS
        }
        ref["_what"] = (
            "CPU torch.sparse runs of benchmarks/gpu_train_check.py (ciao, seed 0, EW, lr 3e-3, dim 64, "
            f"3 layers, hetero with split_relations trust 0.5, {args.epochs} epochs), "
            f"torch {torch.__version__}"
        )
        REFERENCE.write_text(json.dumps(ref, indent=1) + "\n")
        print(f"wrote {REFERENCE}")
        return
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    failed = False
    for enc in ENCODERS:
        runs = out / "runs"
        res = run_one(enc, args.device, args.data_dir, args.epochs, "auto", runs / f"{enc}-{args.device}")
        if args.run_reference or enc not in reference or reference[enc].get("epochs") != args.epochs:
            cpu = run_one(enc, "cpu", args.data_dir, args.epochs, "sparse", runs / f"{enc}-cpu-sparse")
            res["reference"] = {"source": "run now", **cpu}
        else:
            res["reference"] = {"source": str(REFERENCE.relative_to(ROOT)), **reference[enc]}
        diff = res["test_ndcg@20"] - res["reference"]["test_ndcg@20"]
        res["ndcg_difference"] = diff
        res["agrees"] = abs(diff) <= TOLERANCE
        failed |= not res["agrees"]
        (out / f"train_{enc}.json").write_text(json.dumps(res, indent=1) + "\n")
        gpu = f", peak GPU memory {res['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in res else ""
        print(
            f"{enc} on {args.device}: {res['seconds']:.1f} s for {args.epochs} epochs "
            f"(epochs {', '.join(f'{s:.1f}' for s in res['seconds_per_epoch'])} s){gpu}; test NDCG@20 "
            f"{res['test_ndcg@20']:.5f} vs CPU torch.sparse {res['reference']['test_ndcg@20']:.5f} "
            f"({res['reference']['source']}): difference {diff:+.5f} "
            f"({'within' if res['agrees'] else 'OUTSIDE'} {TOLERANCE})",
            flush=True,
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
