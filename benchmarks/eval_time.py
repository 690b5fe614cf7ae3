"""Benchmark of pmtrec_lab.eval.evaluate_embeddings: time overhead and peak memory.

1. Time: ``evaluate_embeddings`` against a bare chunked loop (matmul, -inf fill of the training
   items, ``torch.topk``; same chunk size, same masks from the same pairs, no metrics and no
   tie handling) on the same random embeddings, by default at ciao-like size (5,858 users x 10,685
   items, dim 64, 14 training and 2 test items per user). Prints both times and their ratio
   (target <= 1.5x).
2. Memory: the evaluation at Epinions size (22,164 users x 296,277 items, dim 64, random pairs) runs
   in a child process, which reports its peak resident set size (``VmHWM``) after the imports, with
   the data, and after evaluating; target: peak < 2 GB. (tracemalloc does not see torch's allocations.)

``--dim`` defaults to the library's embedding width, ``pmtrec_lab.config.DEFAULT_DIM`` (64).
``--device cuda`` runs both on the GPU (synchronized clock reads) and adds the peak GPU memory of
the Epinions-size evaluation (``torch.cuda.max_memory_allocated``).

Prints only; asserts nothing. Example:

    .venv/bin/python benchmarks/eval_time.py
    .venv/bin/python benchmarks/eval_time.py --skip-memory --users 2000 --items 5000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from pmtrec_lab.config import DEFAULT_DIM
from pmtrec_lab.eval import evaluate_embeddings
from pmtrec_lab.eval.evaluator import _PairIndex, default_chunk_users


def make_data(
    num_users: int, num_items: int, dim: int, train_per_user: int, test_per_user: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Random embeddings and random (user, item) pairs: ``train_per_user`` + ``test_per_user`` per user."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(num_users, dim, generator=gen).div_(dim**0.5)
    item_emb = torch.randn(num_items, dim, generator=gen).div_(dim**0.5)
    users = np.arange(num_users, dtype=np.int64)

    def pairs(per_user: int) -> np.ndarray:
        items = rng.integers(0, num_items, size=(num_users, per_user), dtype=np.int64)
        return np.stack([np.repeat(users, per_user), items.reshape(-1)], 1)

    return user_emb, item_emb, pairs(train_per_user), pairs(test_per_user)


def bare_loop(
    user_emb: torch.Tensor, item_emb: torch.Tensor, train: np.ndarray, test: np.ndarray, chunk: int, k: int,
    device: torch.device | None = None,
) -> None:
    """The minimum any chunked full-ranking evaluation does: scores, training-item fill, top-k."""
    num_users, num_items = user_emb.shape[0], item_emb.shape[0]
    device = device or user_emb.device
    excluded = _PairIndex(train, num_users, num_items, "train")
    eval_users = np.unique(test[:, 0])
    with torch.inference_mode():
        user_emb, items_t = user_emb.to(device), item_emb.to(device).t()
        for start in range(0, eval_users.shape[0], chunk):
            users = eval_users[start:start + chunk]
            scores = user_emb[torch.from_numpy(users).to(device)] @ items_t
            rows, cols = excluded.chunk(users)
            scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = float("-inf")
            torch.topk(scores, k, dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def time_pair(fn_a, fn_b, repeats: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Interleaved (wall, CPU) timings of two functions after one warm-up each.

    Interleaving makes load drifts hit both alike; CPU time (all threads) is less sensitive than wall
    time to other processes on a shared machine.
    """
    fn_a()
    fn_b()
    times_a: list[tuple[float, float]] = []
    times_b: list[tuple[float, float]] = []
    for _ in range(repeats):
        for fn, out in ((fn_a, times_a), (fn_b, times_b)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            out.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times_a, times_b


def maxrss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Linux: ``VmHWM`` from /proc/self/status, which starts afresh at exec. (``getrusage``'s ru_maxrss
    survives exec, so a child started from a large parent would report at least the parent's size.)
    Elsewhere: ``resource.getrusage`` (KiB on Linux, bytes on macOS; only a fallback here).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def child_memory(args: argparse.Namespace) -> None:
    """Child process: build Epinions-size data, evaluate once, print JSON with max RSS figures."""
    after_imports = maxrss_mb()
    user_emb, item_emb, train, test = make_data(
        args.big_users, args.big_items, args.dim, args.train_per_user, args.test_per_user, seed=1
    )
    before = maxrss_mb()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    res = evaluate_embeddings(user_emb, item_emb, [train], test, chunk_users=args.chunk_users, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    gpu = {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}
    print(json.dumps({
        **gpu,
        "maxrss_after_imports_mb": after_imports,
        "maxrss_before_eval_mb": before,
        "maxrss_peak_mb": maxrss_mb(),
        "seconds": seconds,
        "users": res.num_users_evaluated,
        "chunk_users": args.chunk_users or default_chunk_users(args.big_items),
        "ndcg@20": res.means()["ndcg@20"],
    }))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5858)
    parser.add_argument("--items", type=int, default=10685)
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM)
    parser.add_argument("--train-per-user", type=int, default=14)
    parser.add_argument("--test-per-user", type=int, default=2)
    parser.add_argument("--chunk-users", type=int, default=None, help="default: evaluator's default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--big-users", type=int, default=22164)
    parser.add_argument("--big-items", type=int, default=296277)
    parser.add_argument("--skip-memory", action="store_true", help="skip the Epinions-size child run")
    parser.add_argument("--device", default="cpu", help="where the ranking runs (cpu, cuda)")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        child_memory(args)
        return

    ks = (10, 20, 50)
    user_emb, item_emb, train, test = make_data(
        args.users, args.items, args.dim, args.train_per_user, args.test_per_user, seed=0
    )
    chunk = args.chunk_users or default_chunk_users(args.items)
    print(f"time: {args.users} users x {args.items} items, dim {args.dim}, {len(train)} train / "
          f"{len(test)} test pairs, chunk {chunk} users, {torch.get_num_threads()} threads, "
          f"best/median of {args.repeats} interleaved runs")
    device = torch.device(args.device)
    t_eval, t_bare = time_pair(
        lambda: evaluate_embeddings(
            user_emb, item_emb, [train], test, ks=ks, chunk_users=chunk, device=device
        ),
        lambda: bare_loop(user_emb, item_emb, train, test, chunk, max(ks), device=device),
        args.repeats,
    )
    for label, j in (("wall", 0), ("CPU", 1)):
        ev = [t[j] for t in t_eval]
        bare = [t[j] for t in t_bare]
        ev_best, ev_med = min(ev), statistics.median(ev)
        bare_best, bare_med = min(bare), statistics.median(bare)
        print(f"  {label:4s} evaluate_embeddings best {ev_best:.3f} s, median {ev_med:.3f} s | bare loop "
              f"best {bare_best:.3f} s, median {bare_med:.3f} s | ratio best {ev_best / bare_best:.2f}x, "
              f"median {ev_med / bare_med:.2f}x")
    print("  target: ratio <= 1.5x")

    if args.skip_memory:
        return
    cmd = [sys.executable, __file__, "--child-memory", "--big-users", str(args.big_users),
           "--big-items", str(args.big_items), "--dim", str(args.dim),
           "--train-per-user", str(args.train_per_user), "--test-per-user", str(args.test_per_user)]
    if args.chunk_users:
        cmd += ["--chunk-users", str(args.chunk_users)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--device", args.device]
    print(f"memory: {args.big_users} users x {args.big_items} items, dim {args.dim}, in a child process")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  child failed (rc {proc.returncode}):\n{proc.stderr}")
        return
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    before, peak = info["maxrss_before_eval_mb"], info["maxrss_peak_mb"]
    print(f"  evaluation {info['seconds']:.1f} s over {info['users']} users, "
          f"chunk {info['chunk_users']} users")
    print(f"  max RSS after imports {info['maxrss_after_imports_mb']:.0f} MB, with the data {before:.0f} MB, "
          f"peak {peak:.0f} MB (evaluation adds {peak - before:.0f} MB; target peak < 2048 MB)")
    if "peak_gpu_mb" in info:
        print(f"  peak GPU memory {info['peak_gpu_mb']:.0f} MB on {args.device}")


if __name__ == "__main__":
    main()
