"""Matrix factorization: the representation of an entity is its learnable embedding row.

MF with BPR (Rendle et al., UAI 2009) is the simplest shared encoder of multi-task
recommendation: with it, per-entity task gradients on representations are exactly the gradients
on the parameters.
"""

from __future__ import annotations

import torch

from pmtrec_lab.encoders.base import Encoder

__all__ = ["MFEncoder"]


class MFEncoder(Encoder):
    """``forward()`` returns the two embedding weights themselves (no copy); ``encode`` gathers rows."""

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding(users), self.item_embedding(items)

    def extra_repr(self) -> str:
        return f"users={self.num_users}, items={self.num_items}, dim={self.dim}"
