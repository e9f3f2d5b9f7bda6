"""SparsityMonitor: how sparse a model's entmax attention is, per layer and head, while it runs.

    with SparsityMonitor(model) as mon:
        for batch in loader:
            loss = model(**batch).loss; ...
            logger.log(mon.summary(reset=True))     # plain data; reading it is the only synchronisation
    mon.plot("sparsity.png")

Inside the model's forward nothing is read back to the host: each attention call asks for the per-row
statistics (return_stats: τ and the support size) and adds, per head, on the device: the support sizes, the
visible keys, and the 64×64 blocks of the score matrix that are visible and that hold a nonzero weight. The
blocks need the scores once more (an extra QKᵀ over the visible keys, computed in query chunks): monitoring costs
about one more score pass per layer, so `every=k` records only every k-th forward of each layer.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import nn

BLOCK = 64


def _visible_rows(i0, i1, Nq, Nk, causal, window, kpm, am, device):
    """Rows i0..i1 of the visibility of docs/design.md: bool broadcastable to (B, H, i1 - i0, Nk)."""
    i = torch.arange(i0, i1, device=device)[:, None]
    j = torch.arange(Nk, device=device)[None, :]
    d = i + (Nk - Nq)
    vis = torch.ones(i1 - i0, Nk, dtype=torch.bool, device=device)
    if causal:
        vis = vis & (j <= d)
    if window is not None:
        if window[0] >= 0:
            vis = vis & (j >= d - window[0])
        if window[1] >= 0:
            vis = vis & (j <= d + window[1])
    vis = vis[None, None]
    if kpm is not None:
        vis = vis & kpm[:, None, None, :]
    if am is not None:
        am = am if am.dtype == torch.bool else am == 0
        am = am.reshape((1,) * (4 - am.dim()) + tuple(am.shape))
        vis = vis & (am[:, :, i0:i1] if am.shape[2] > 1 else am)
    return vis


def _occupancy(q, k, tau, alpha, scale, causal, window, kpm, am, block):
    """Per head, summed over the batch: (64x64 blocks holding a nonzero weight, visible blocks, visible keys summed
    over rows, rows with a visible key), for dense (B, H, Nq, D) inputs; τ (B, H, Nq) in x units ((α-1)·z)."""
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    G = H // k.shape[1]
    nkb = math.ceil(Nk / block)
    pad = nkb * block - Nk
    a = torch.as_tensor(alpha, dtype=torch.float32, device=q.device).reshape(-1).expand(H).reshape(1, H, 1, 1)
    soft = a == 1.0  # softmax heads: every visible key has weight
    c = torch.where(soft, torch.ones_like(a), a - 1.0) * scale
    kr = k.float().repeat_interleave(G, 1)
    stats = torch.zeros(4, H, dtype=torch.float64, device=q.device)
    for i0 in range(0, Nq, block):
        i1 = min(Nq, i0 + block)
        x = torch.matmul(q[:, :, i0:i1].float(), kr.transpose(-1, -2)) * c
        vis = _visible_rows(i0, i1, Nq, Nk, causal, window, kpm, am, q.device).expand(B, H, i1 - i0, Nk)
        on = vis & (soft | (x > tau[:, :, i0:i1, None]))
        onb = torch.nn.functional.pad(on, (0, pad)).view(B, H, i1 - i0, nkb, block).any(-1).any(2)
        visb = torch.nn.functional.pad(vis, (0, pad)).view(B, H, i1 - i0, nkb, block).any(-1).any(2)
        stats[0] += onb.sum(dim=(0, 2))
        stats[1] += visb.sum(dim=(0, 2))
        stats[2] += vis.sum(dim=(0, 2, 3))
        stats[3] += vis.any(-1).sum(dim=(0, 2))
    return stats


def record_forward(module, q, k, tau, support, alpha, scale, causal, window, kpm, am, cu_q=None, cu_k=None):
    """Add one attention call's statistics to the monitor attached to `module` (device-side only). Packed
    sequences (B = 1, cu_q = cu_k): one row of tokens whose visibility also requires the same sequence."""
    mon = module._entflash_monitor
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if cu_q is not None:
        pos = torch.arange(q.shape[2], device=q.device)
        seq = torch.searchsorted(cu_q.to(q.device), pos, right=True)
        am = (seq[:, None] == seq[None, :])[None, None]
    occ = _occupancy(q, k, tau, alpha, scale, causal, window, kpm, am, mon.block)
    acc = mon._acc.setdefault(module, torch.zeros(5, q.shape[1], dtype=torch.float64, device=q.device))
    acc[:4] += occ
    acc[4] += support.to(torch.float64).sum(dim=(0, 2))


class SparsityMonitor:
    """Records, for every attention layer and head of an entmax model, the mean support size (keys with nonzero
    weight per query), the fraction of exactly-zero weights among the visible ones, and the fraction of visible
    64×64 blocks of the score matrix with no nonzero weight. A context manager; `summary()` returns plain data,
    `plot(path)` a layer × head heat map (extra [plot])."""

    def __init__(self, model: nn.Module, every: int = 1, block: int = BLOCK):
        from .transformers import attention_modules

        if not isinstance(every, int) or every < 1:
            raise ValueError(f"SparsityMonitor: every must be an int >= 1, got {every!r}")
        self.model = model
        self.modules = attention_modules(model)
        self.every = every
        self.block = block
        self._acc: Dict[nn.Module, torch.Tensor] = {}
        self._calls: Dict[nn.Module, int] = {}

    def wants(self, module) -> bool:
        n = self._calls.get(module, 0)
        self._calls[module] = n + 1
        return n % self.every == 0

    def __enter__(self):
        for m in self.modules:
            m._entflash_monitor = self
        return self

    def __exit__(self, *exc):
        for m in self.modules:
            if getattr(m, "_entflash_monitor", None) is self:
                del m._entflash_monitor
        return False

    def reset(self) -> None:
        self._acc.clear()
        self._calls.clear()

    def summary(self, reset: bool = False) -> List[dict]:
        """One entry per attention layer (model order): {"layer", "support", "zero_fraction", "block_sparsity"},
        each a list with one float per head (None for a layer not recorded yet)."""
        rows = []
        for i, m in enumerate(self.modules):
            acc = self._acc.get(m)
            if acc is None:
                rows.append({"layer": i, "support": None, "zero_fraction": None, "block_sparsity": None})
                continue
            a = acc.cpu()
            nonzero_blocks, vis_blocks, vis_keys, rows_with_keys, supp = a
            rows.append({
                "layer": i,
                "support": (supp / rows_with_keys.clamp(min=1)).tolist(),
                "zero_fraction": (1 - supp / vis_keys.clamp(min=1)).tolist(),
                "block_sparsity": (1 - nonzero_blocks / vis_blocks.clamp(min=1)).tolist(),
            })
        if reset:
            self.reset()
        return rows

    @staticmethod
    def means(rows: List[dict]) -> Optional[dict]:
        """{"support", "zero_fraction", "block_sparsity"} of a summary() list, each averaged over heads and then
        over the layers recorded; None when no layer was recorded."""
        rows = [r for r in rows if r["support"] is not None]
        if not rows:
            return None
        return {key: sum(sum(r[key]) / len(r[key]) for r in rows) / len(rows)
                for key in ("support", "zero_fraction", "block_sparsity")}

    def plot(self, path: str, metric: str = "block_sparsity") -> str:
        """A layer × head heat map of `metric` ("block_sparsity", "zero_fraction" or "support"), saved to path."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("SparsityMonitor.plot needs matplotlib: pip install 'entflash[plot]'") from e
        if metric not in ("block_sparsity", "zero_fraction", "support"):
            raise ValueError(f"metric must be 'block_sparsity', 'zero_fraction' or 'support', got {metric!r}")
        data = [r[metric] for r in self.summary() if r[metric] is not None]
        if not data:
            raise ValueError("SparsityMonitor.plot: nothing recorded yet (run the model inside the monitor)")
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(data[0]), 1.0 + 0.4 * len(data)))
        im = ax.imshow(data, cmap="viridis", aspect="auto", vmin=0 if metric != "support" else None,
                       vmax=1 if metric != "support" else None)
        ax.set(xlabel="head", ylabel="layer", title=metric.replace("_", " "))
        ax.set_xticks(range(len(data[0])))
        ax.set_yticks(range(len(data)))
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
