"""The encoder registry: an encoder is one module that calls ``register_encoder`` (found by the
package scan, an entry point, or a plain import), ``encoder.name`` is checked against it when a
configuration loads, and task heads are sized from the encoder's output width."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import textwrap
import uuid

import pytest

import pmtrec_lab.encoders as encoders_pkg
from pmtrec_lab.config import load_config
from pmtrec_lab.encoders import Encoder, build_encoder, encoder_names, register_encoder
from pmtrec_lab.encoders import registry as reg
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.tasks import LabelTask, build_tasks
from pmtrec_lab.train import build_model, train
from tests.helpers import tiny_synthetic

SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}

#: A toy encoder: MF followed by a shared linear projection to twice the table width, so its
#: output width (``out_dim``) differs from ``encoder.dim``.
TOY_SOURCE = """
from torch import nn

from pmtrec_lab.encoders import Encoder, register_encoder


@register_encoder("{name}")
class ToyEncoder(Encoder):
    def __init__(self, num_users, num_items, dim):
        super().__init__(num_users, num_items, dim)
        self.proj = nn.Linear(dim, 2 * dim, bias=False)

    @property
    def out_dim(self):
        return 2 * self.dim

    def forward(self):
        return self.proj(self.user_embedding.weight), self.proj(self.item_embedding.weight)
"""


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test (what a test registers does not leak)."""
    encoder_names()  # built-ins and entry points loaded before the copy
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    return reg


def _write_module(folder, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def _import_toy(tmp_path, monkeypatch, encoder_name: str = "toy") -> str:
    """Write the toy encoder's module into ``tmp_path``, put it on ``sys.path`` and import it."""
    module = f"toy_encoder_{uuid.uuid4().hex[:8]}"
    _write_module(tmp_path, module, TOY_SOURCE.format(name=encoder_name))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(module)  # a unique name: each test imports its own module
    return module


def _cfg(**over):
    base = {
        "data": {"name": "synthetic", "loader_args": SYN, "k_core": 2},
        "tasks": {"include": ["social:friends", "item_label:category", "user_label:community"]},
        "encoder": {"name": "mf", "dim": 8},
        "optim": {"epochs": 1, "batch_size": 256, "lr": 0.01},
        "eval": {"ks": [10, 20]},
        "progress": "none",
    }
    return load_config(base=base).updated(over)


def test_builtins_are_registered_in_display_order(registry):
    assert encoder_names()[:3] == ("mf", "lightgcn", "hetero")
    assert set(registry.ENCODERS) == set(encoder_names())


def test_a_toy_encoder_from_its_own_module_trains_through_the_config(registry, tmp_path, monkeypatch, ds):
    with pytest.raises(ConfigError, match="unknown encoder 'toy'"):
        _cfg(encoder={"name": "toy"})  # not known before its module is imported
    _import_toy(tmp_path, monkeypatch)
    assert "toy" in encoder_names()
    cfg = _cfg(encoder={"name": "toy", "dim": 8})
    model = build_model(cfg, ds)
    assert type(model.encoder).__name__ == "ToyEncoder" and model.encoder.out_dim == 16
    run = train(cfg, tmp_path / "run", dataset=ds)
    assert run.finished and run.metrics["epochs_run"] == 1
    assert run.metrics["best_epoch"] == 1 and "ndcg@20" in run.metrics["test"]  # counted from 1


def test_a_bad_encoder_name_lists_the_known_ones(registry, ds):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["encoder.name=gat"])
    message = str(err.value)
    assert "encoder.name" in message and "'gat'" in message
    for name in encoder_names():
        assert name in message
    with pytest.raises(ValueError, match=r"unknown encoder 'gat'; known encoders: mf, lightgcn, hetero"):
        build_encoder("gat", ds, 8, 1)


def test_label_heads_follow_the_encoders_output_width(registry, tmp_path, monkeypatch, ds):
    _import_toy(tmp_path, monkeypatch)
    for name in encoder_names():
        model = build_model(_cfg(encoder={"name": name, "dim": 8}), ds)
        heads = [t.head for t in model.tasks if isinstance(t, LabelTask)]
        assert len(heads) == 2, name  # item_label:category, user_label:community
        assert all(h.in_features == model.encoder.out_dim for h in heads), name
    assert model.encoder.out_dim == 16  # the toy: twice encoder.dim, not encoder.dim
    tasks = build_tasks(_cfg(), ds, 5)
    assert [t.head.in_features for t in tasks if isinstance(t, LabelTask)] == [5, 5]


def test_builtin_out_dim_is_the_table_width(ds):
    for name in ("mf", "lightgcn", "hetero"):
        enc = build_encoder(name, ds, 12, 2)
        users, items = enc()
        assert enc.out_dim == 12 == users.shape[1] == items.shape[1], name


def test_a_new_module_in_the_package_is_found_by_the_scan(registry, tmp_path, monkeypatch):
    """An encoder file dropped into ``pmtrec_lab/encoders`` needs no other edit (the package's
    search path is extended with a temporary folder standing in for the package folder)."""
    module = f"scanned_{uuid.uuid4().hex[:8]}"
    _write_module(tmp_path, module, TOY_SOURCE.format(name="scanned-toy"))
    _write_module(tmp_path, "_private_helper", "raise RuntimeError('private modules are not scanned')\n")
    monkeypatch.setattr(encoders_pkg, "__path__", [*encoders_pkg.__path__, str(tmp_path)])
    monkeypatch.setattr(reg, "_loaded", False)
    assert "scanned-toy" in encoder_names()
    assert f"pmtrec_lab.encoders.{module}" in sys.modules


def test_entry_points_register_encoders_and_a_broken_one_is_only_logged(
    registry, tmp_path, monkeypatch, caplog
):
    module = f"plugin_{uuid.uuid4().hex[:8]}"
    _write_module(tmp_path, module, TOY_SOURCE.format(name="plugin-toy"))
    monkeypatch.syspath_prepend(str(tmp_path))
    group = reg.ENTRY_POINT_GROUP
    points = [
        importlib.metadata.EntryPoint(name="plugin-toy", value=module, group=group),
        importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz", group=group),
    ]
    seen = []

    def fake_entry_points(*, group):
        seen.append(group)
        return points

    monkeypatch.setattr(reg, "entry_points", fake_entry_points)
    monkeypatch.setattr(reg, "_loaded", False)
    with caplog.at_level(logging.WARNING, logger="pmtrec_lab.encoders"):
        names = encoder_names()
    assert seen == ["pmtrec_lab.encoders"]
    assert "plugin-toy" in names and names[:3] == ("mf", "lightgcn", "hetero")
    assert "broken" in caplog.text and "failed to load" in caplog.text


def test_register_encoder_refuses_a_taken_name_and_a_non_encoder(registry):
    class Other(Encoder):
        def forward(self):
            return self.user_embedding.weight, self.item_embedding.weight

    with pytest.raises(ValueError, match="'mf' registered twice"):
        register_encoder("mf")(Other)
    with pytest.raises(TypeError, match="Encoder subclass"):
        register_encoder("not-an-encoder")(dict)
    assert register_encoder("other")(Other) is Other and reg.get_encoder("other") is Other


def test_sparse_tables_only_for_encoders_that_support_them(ds):
    assert build_encoder("mf", ds, 8, 1, sparse=True).sparse
    with pytest.raises(ValueError, match=r"optim\.sparse.*\(mf\).*'hetero'"):
        build_encoder("hetero", ds, 8, 1, sparse=True)
