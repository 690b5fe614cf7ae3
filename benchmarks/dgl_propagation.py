"""Profile of the graph encoders' CPU propagation: DGL's paths against torch.sparse, in one run.

On the LightGCN graph of a dataset (ciao by default: 16.5k nodes, 230k directed edges) and the
hetero encoder's graph, dim 64, 3 layers, forward and forward + backward, times (medians of
interleaved repeats) of:

- ``update_all``: the former DGL path, ``update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "h"))``
  in a ``local_scope`` (hetero: ``multi_update_all``);
- ``u_mul_e_sum``: ``dgl.ops.u_mul_e_sum`` called directly on a graph whose formats were created
  once (what removing our per-call overheads gives with the same kernel);
- ``encoder dgl``: the encoder's DGL path now (``encoders.dgl_prop``: ``copy_u_sum`` between node
  scales that factor the edge weights), with libxsmm on and (``--libxsmm-off``) off;
- ``encoder sparse``: the torch.sparse path (CSR ``A`` and ``A^T`` built once).
Prints ms and the ratio over torch.sparse per thread count.

    .venv/bin/python benchmarks/dgl_propagation.py [--dataset ciao] [--threads 1,2] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from pmtrec_lab.config import DEFAULT_DIM
from pmtrec_lab.data import load_dataset
from pmtrec_lab.dgl_compat import dgl, fn
from pmtrec_lab.encoders import HeteroEncoder, LightGCNEncoder


def _layers(step: Callable[[torch.Tensor], torch.Tensor], h0: torch.Tensor, layers: int) -> torch.Tensor:
    acc = h = h0
    for _ in range(layers):
        h = step(h)
        acc = acc + h
    return acc / (layers + 1)


def lightgcn_variants(enc: LightGCNEncoder, h0: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    graph, layers = enc.graph, enc.num_layers
    w = graph.edata["w"]

    def update_all(h: torch.Tensor) -> torch.Tensor:
        with graph.local_scope():
            graph.ndata["h"] = h
            graph.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "h"))
            return graph.ndata["h"]

    return {
        "update_all": lambda: _layers(update_all, h0, layers),
        "u_mul_e_sum": lambda: _layers(lambda h: dgl.ops.u_mul_e_sum(graph, h, w), h0, layers),
        "encoder dgl": lambda: enc.propagate(h0),
    }


def hetero_variants(enc: HeteroEncoder) -> dict[str, Callable[[], torch.Tensor]]:
    graph = enc.graph
    tables = enc._tables()
    funcs = {et: (fn.u_mul_e("h", "w", "m"), fn.sum("m", "out")) for et in graph.canonical_etypes}

    def multi_update_all() -> torch.Tensor:
        h = {nt: tables[nt].weight for nt in graph.ntypes}
        acc = dict(h)
        with graph.local_scope():
            for _ in range(enc.num_layers):
                for nt in graph.ntypes:
                    graph.nodes[nt].data["h"] = h[nt]
                graph.multi_update_all(funcs, "sum")
                for nt in graph.ntypes:
                    data = graph.nodes[nt].data
                    h[nt] = data.pop("out") if "out" in data else torch.zeros_like(h[nt])
                    acc[nt] = acc[nt] + h[nt]
        return torch.cat([acc[nt] for nt in graph.ntypes])

    return {
        "update_all": multi_update_all,
        "encoder dgl": lambda: torch.cat(list(enc.forward_all().values())),
    }


def time_all(fns: dict[str, Callable[[], torch.Tensor]], backward: bool, repeats: int) -> dict[str, float]:
    def once(f: Callable[[], torch.Tensor]) -> float:
        t0 = time.perf_counter()
        if backward:
            f().sum().backward()
        else:
            with torch.no_grad():
                f()
        return time.perf_counter() - t0

    for f in fns.values():
        once(f)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():  # interleaved: load drifts hit every variant alike
            times[k].append(once(f))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ciao")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument(
        "--libxsmm-off", action="store_true", help="also time the encoder's DGL path without libxsmm"
    )
    args = ap.parse_args()
    ds = load_dataset(args.dataset, args.data_dir)
    torch.manual_seed(0)
    light = LightGCNEncoder(ds, DEFAULT_DIM, num_layers=args.layers, propagation="auto")
    hetero = HeteroEncoder(ds, DEFAULT_DIM, num_layers=args.layers, propagation="auto")
    h0 = torch.cat([light.user_embedding.weight, light.item_embedding.weight]).detach().requires_grad_(True)
    print(
        f"{args.dataset}: LightGCN graph {light.graph.num_nodes():,} nodes, "
        f"{light.graph.num_edges():,} edges; "
        f"hetero {sum(hetero._counts.values()):,} nodes, {hetero.graph.num_edges():,} edges "
        f"({len(hetero.graph.canonical_etypes)} edge types); dim {DEFAULT_DIM}, {args.layers} layers, "
        f"median of {args.repeats}"
    )
    for threads in (int(t) for t in args.threads.split(",") if t):
        torch.set_num_threads(threads)
        for name, enc, fns in (
            ("lightgcn", light, lightgcn_variants(light, h0)),
            ("hetero", hetero, hetero_variants(hetero)),
        ):
            sparse = _sparse_of(enc, h0)
            fns = {**fns, "encoder sparse": sparse}
            if args.libxsmm_off:
                encoder_dgl = fns["encoder dgl"]

                def no_xsmm(f: Callable[[], torch.Tensor] = encoder_dgl) -> torch.Tensor:
                    dgl.use_libxsmm(False)
                    try:
                        return f()
                    finally:
                        dgl.use_libxsmm(True)

                fns["encoder dgl, no libxsmm"] = no_xsmm
            for backward in (False, True):
                res = time_all(fns, backward, args.repeats)
                base = res["encoder sparse"]
                cells = ", ".join(f"{k} {v * 1e3:.1f} ms ({v / base:.2f}x)" for k, v in res.items())
                print(f"threads={threads} {name} {'fwd+bwd' if backward else 'fwd'}: {cells}", flush=True)


def _sparse_of(enc, h0: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The encoder's torch.sparse path on the same inputs (the encoder built with ``auto`` has both)."""

    def run() -> torch.Tensor:
        enc.propagation = "sparse"
        try:
            return (
                enc.propagate(h0)
                if isinstance(enc, LightGCNEncoder)
                else torch.cat(list(enc.forward_all().values()))
            )
        finally:
            enc.propagation = "auto"

    return run


if __name__ == "__main__":
    main()
