"""How a sequence is laid out over the ranks of a group: which positions each rank holds.

* "contiguous": rank r holds positions r·n .. (r+1)·n - 1 (n = N / world).
* "zigzag": the sequence is cut into 2·world chunks of c = N / (2·world) positions; rank r holds chunks r and
  2·world - 1 - r. Under a causal mask the early chunk sees few keys and the late one many, so every rank
  holds the same number of visible (query, key) pairs (with "contiguous" the last rank's rows see every key
  and the first rank's see n). context.py scores a row chunk only against the keys some row of it sees, so
  there the zig-zag layout evens out the work across ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

LAYOUTS = ("contiguous", "zigzag")


def check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"Expected layout to be one of {LAYOUTS}, but got {layout!r}")


def world_and_rank(group):
    g = group if group is not None else dist.group.WORLD
    return dist.get_world_size(g), dist.get_rank(g)


def positions(N: int, world: int, rank: int, layout: str = "contiguous", device=None) -> torch.Tensor:
    """The global positions (int64, ascending) that `rank` holds of a sequence of N."""
    check_layout(layout)
    parts = 2 * world if layout == "zigzag" else world
    if N % parts:
        raise ValueError(f"the sequence length ({N}) must be a multiple of {parts} for layout {layout!r} over "
                         f"{world} ranks")
    if layout == "contiguous":
        n = N // world
        return torch.arange(rank * n, (rank + 1) * n, device=device)
    c = N // parts
    first = torch.arange(rank * c, (rank + 1) * c, device=device)
    last = torch.arange((parts - 1 - rank) * c, (parts - rank) * c, device=device)
    return torch.cat([first, last])


def shard_sequence(x: torch.Tensor, group=None, dim: int = 2, layout: str = "contiguous") -> torch.Tensor:
    """This rank's shard of x along `dim` (the sequence) under `layout` (a view for "contiguous")."""
    W, r = world_and_rank(group)
    n = x.shape[dim]
    pos = positions(n, W, r, layout)
    if layout == "contiguous":
        return x.narrow(dim, r * (n // W), n // W)
    return x.index_select(dim, pos.to(x.device))


def gather_sequence(x: torch.Tensor, group=None, dim: int = 2, layout: str = "contiguous") -> torch.Tensor:
    """The whole sequence from every rank's shard (for checks and outputs; not differentiable)."""
    g = group if group is not None else dist.group.WORLD
    W = dist.get_world_size(g)
    parts = [torch.empty_like(x) for _ in range(W)]
    dist.all_gather(parts, x.contiguous(), group=g)
    whole = torch.cat(parts, dim)
    if layout == "contiguous":
        return whole
    N = whole.shape[dim]
    order = torch.cat([positions(N, W, r, layout) for r in range(W)]).to(x.device)
    return whole.index_select(dim, torch.argsort(order))
