"""Import DGL safely on torch builds it ships no native add-ons for.

PyPI's DGL 2.1.0 is the newest Linux wheel; its GraphBolt library exists only for torch
2.0-2.2.1. With torch 2.13, ``import dgl`` reaches ``dgl.graphbolt`` through
``dgl.distributed`` and fails with ``FileNotFoundError`` at module level. When (and only when)
the GraphBolt library for the running torch is absent, we register an empty module as
``sys.modules["dgl.graphbolt"]`` before the first import. Nothing is stubbed where the library
is present. ``DGLBACKEND`` is set to ``pytorch``.

Everything in pmtrec_lab imports DGL as ``from pmtrec_lab.dgl_compat import dgl``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

__all__ = ["dgl", "fn", "graphbolt_library_path", "graphbolt_stubbed"]

os.environ.setdefault("DGLBACKEND", "pytorch")


def graphbolt_library_path() -> Path | None:
    """Where DGL's GraphBolt library for the running torch version would be, or None if DGL is absent."""
    spec = importlib.util.find_spec("dgl")
    if spec is None or spec.origin is None:
        return None
    import torch

    version = torch.__version__.split("+")[0]
    return Path(spec.origin).parent / "graphbolt" / f"libgraphbolt_pytorch_{version}.so"


def _needs_stub(library: Path | None) -> bool:
    return library is not None and not library.exists()


def _install_graphbolt_stub() -> None:
    stub = types.ModuleType("dgl.graphbolt")
    stub.__doc__ = "Empty stand-in: GraphBolt has no native library for this torch (pmtrec_lab.dgl_compat)."
    stub.__path__ = []  # a package, so `from dgl.graphbolt import x` fails cleanly, not oddly
    sys.modules["dgl.graphbolt"] = stub


graphbolt_stubbed: bool = False
if "dgl" not in sys.modules and _needs_stub(graphbolt_library_path()):
    _install_graphbolt_stub()
    graphbolt_stubbed = True

import dgl  # noqa: E402
import dgl.function as fn  # noqa: E402
