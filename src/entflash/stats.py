"""The per-row statistics that `return_stats=True` returns with the attention output."""

from __future__ import annotations

from typing import NamedTuple

import torch


class AttentionStats(NamedTuple):
    """out: the attention output. tau: (B, H, Nq) float32, the threshold τ of docs/design.md in units of (α-1)·z
    (for α = 1 the log-sum-exp; +inf for a row with no visible key). support: (B, H, Nq) int32, the number of keys
    with nonzero probability (for α = 1, the number of visible keys). Varlen calls: (H, total_q)."""

    out: torch.Tensor
    tau: torch.Tensor
    support: torch.Tensor
