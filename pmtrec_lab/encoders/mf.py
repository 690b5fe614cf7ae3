"""Matrix factorization: the representation of an entity is its learnable embedding row.

MF with BPR (Rendle et al., UAI 2009) is the simplest shared encoder of multi-task
recommendation: with it, per-entity task gradients on representations are exactly the gradients
on the parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pmtrec_lab.encoders.base import Encoder, EncoderOptions
from pmtrec_lab.encoders.registry import register_encoder

if TYPE_CHECKING:
    from pmtrec_lab.data.types import RecDataset

__all__ = ["MFEncoder"]


@register_encoder("mf")
class MFEncoder(Encoder):
    """``forward()`` returns the two embedding weights themselves (no copy); ``encode`` gathers rows.

    ``sparse=True``: ``encode`` and ``layer0`` give sparse (COO) gradients holding only the rows
    looked up, for ``torch.optim.SparseAdam`` (``optim.sparse``). The tables, their initialization
    and ``state_dict`` are the same either way.
    """

    supports_sparse = True

    @classmethod
    def from_options(cls, dataset: RecDataset, options: EncoderOptions) -> MFEncoder:
        return cls(dataset.num_users, dataset.num_items, options.dim, sparse=options.sparse)

    def __init__(self, num_users: int, num_items: int, dim: int, sparse: bool = False) -> None:
        super().__init__(num_users, num_items, dim)
        self.sparse = bool(sparse)
        # set after construction so the tables are drawn exactly as in the dense encoder
        self.user_embedding.sparse = self.sparse
        self.item_embedding.sparse = self.sparse

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding(users), self.item_embedding(items)

    def extra_repr(self) -> str:
        sparse = ", sparse=True" if self.sparse else ""
        return f"users={self.num_users}, items={self.num_items}, dim={self.dim}{sparse}"
