"""Sequence parallelism by head sharding ("Ulysses"): all-to-all exchanges, whole sequences per rank for a share of the heads.

    out = sequence_parallel_attention(q, k, v, group=group, causal=True)        # or mesh=mesh, mesh_dim="sp"

Each rank holds a contiguous shard of the sequence (rank r: positions r·n .. (r+1)·n - 1 of every sequence,
n = N / world), q (B, H, n, D) and k, v (B, Hkv, n, D). An all-to-all gives each rank the whole sequence for
H / world of the heads (and Hkv / world of the KV heads), the ordinary attention runs there (any α, a per-head α
tensor, causal, window, padding, attn_mask, the kernels or the torch path), and a second all-to-all returns the
output to the sequence layout. Forward and backward are exact: each head sees exactly the keys it would on one
device. τ of a row depends on all its keys, which is why the heads, not the keys, are split: no threshold
solve crosses ranks. Memory per rank is O(N / world) for the inputs and O(N) for its heads' keys.

Not supported (raises): head counts that the world size does not divide, and dropout (its random bits are a
function of the head index, which sharding renumbers).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..attention import entmax_attention, entmax_attention_varlen
from ..stats import AttentionStats


def _group(group, mesh, mesh_dim):
    if mesh is not None:
        if group is not None:
            raise ValueError("give either group or mesh (with mesh_dim), not both")
        return mesh.get_group(mesh_dim)
    return group if group is not None else dist.group.WORLD


class _AllToAll(torch.autograd.Function):
    """all_to_all_single with equal splits along dim 0; its gradient is the same exchange of the gradient."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        x = x.contiguous()
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous (empty_like keeps x's strides)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        out = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
        dist.all_to_all_single(out, grad, group=ctx.group)
        return out, None


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """Differentiable all-to-all of x (world, ...): slice j goes to rank j, slice i of the result came from rank i."""
    return _AllToAll.apply(x, group)


def seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """(B, H, n, D) sequence shard -> (B, H / world, world·n, D): the whole sequence for this rank's heads."""
    W = dist.get_world_size(group)
    B, H, n, D = x.shape
    send = x.reshape(B, W, H // W, n, D).permute(1, 0, 2, 3, 4)  # slice j: the heads of rank j
    recv = _all_to_all(send, group)  # slice i: sequence shard i of this rank's heads
    return recv.permute(1, 2, 0, 3, 4).reshape(B, H // W, W * n, D)


def heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """The inverse of seq_to_heads: (B, H / world, world·n, D) -> (B, H, n, D)."""
    W = dist.get_world_size(group)
    B, h, N, D = x.shape
    n = N // W
    send = x.reshape(B, h, W, n, D).permute(2, 0, 1, 3, 4)  # slice j: sequence shard j
    recv = _all_to_all(send, group)  # slice i: the heads of rank i for this rank's shard
    return recv.permute(1, 0, 2, 3, 4).reshape(B, W * h, n, D)


def _stat_to_seq(t: torch.Tensor, group) -> torch.Tensor:
    """Per-row statistics (B, H / world, N) -> (B, H, n)."""
    return heads_to_seq(t[..., None].float(), group)[..., 0]


def sequence_parallel_attention(q, k, v, *, group=None, mesh=None, mesh_dim=None, alpha=1.5, attn_mask=None,
                                dropout_p: float = 0.0, return_stats: bool = False, **kwargs):
    """Entmax attention of a sequence-sharded batch (module docstring). q (B, H, n, D), k, v (B, Hkv, n, D): this
    rank's shard; alpha: a float or an (H,) tensor (the whole model's heads, the same on every rank); attn_mask:
    broadcastable to the whole (B, H, N, N); key_padding_mask (a keyword): (B, N), the whole sequence. Other
    keywords go to entmax_attention. Returns this rank's (B, H, n, Dv) output (and, with return_stats, τ and the
    support of its rows, (B, H, n))."""
    g = _group(group, mesh, mesh_dim)
    W = dist.get_world_size(g)
    rank = dist.get_rank(g)
    H, Hkv = q.shape[1], k.shape[1]
    _check_heads(H, Hkv, W, dropout_p)
    h0, h1 = rank * (H // W), (rank + 1) * (H // W)
    if isinstance(alpha, torch.Tensor) and alpha.dim() == 1:
        alpha = alpha[h0:h1]
    if attn_mask is not None:
        am = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
        attn_mask = am[:, h0:h1] if am.shape[1] > 1 else am
    qh, kh, vh = (seq_to_heads(t, g) for t in (q, k, v))
    res = entmax_attention(qh, kh, vh, alpha=alpha, attn_mask=attn_mask, return_stats=return_stats, **kwargs)
    if not return_stats:
        return heads_to_seq(res, g)
    return AttentionStats(heads_to_seq(res.out, g), _stat_to_seq(res.tau, g),
                          _stat_to_seq(res.support, g).to(torch.int32))


def sequence_parallel_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, *,
                                       group=None, mesh=None, mesh_dim=None, alpha=1.5, dropout_p: float = 0.0,
                                       return_stats: bool = False, **kwargs):
    """Packed variable-length batches (flash-attn's layout) sharded along the tokens: q (T / world, H, D) and k, v
    (T_k / world, Hkv, D) are this rank's contiguous shards of the packed batch; cu_seqlens_q / cu_seqlens_k
    describe the whole packed batch (the same on every rank), so a sequence may span ranks. Heads are exchanged as
    in sequence_parallel_attention; returns this rank's (T / world, H, Dv) output (with return_stats, τ and the
    support of its tokens, (H, T / world))."""
    g = _group(group, mesh, mesh_dim)
    W, rank = dist.get_world_size(g), dist.get_rank(g)
    H, Hkv = q.shape[1], k.shape[1]
    _check_heads(H, Hkv, W, dropout_p)
    h0, h1 = rank * (H // W), (rank + 1) * (H // W)
    if isinstance(alpha, torch.Tensor) and alpha.dim() == 1:
        alpha = alpha[h0:h1]
    to_heads = lambda t: seq_to_heads(t.transpose(0, 1)[None], g)[0].transpose(0, 1)  # noqa: E731
    to_seq = lambda t: heads_to_seq(t.transpose(0, 1)[None], g)[0].transpose(0, 1)  # noqa: E731
    res = entmax_attention_varlen(to_heads(q), to_heads(k), to_heads(v), cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                  max_seqlen_k, alpha=alpha, return_stats=return_stats, **kwargs)
    if not return_stats:
        return to_seq(res)
    stat = lambda t: heads_to_seq(t.float()[None, :, :, None], g)[0, :, :, 0]  # noqa: E731
    return AttentionStats(to_seq(res.out), stat(res.tau), stat(res.support).to(torch.int32))


def _check_heads(H, Hkv, W, dropout_p):
    if H % W or Hkv % W:
        raise ValueError(f"sequence parallelism shards heads: the world size ({W}) must divide the query heads ({H}) "
                         f"and the key/value heads ({Hkv})")
    if dropout_p:
        raise NotImplementedError("sequence parallelism does not support dropout (its random bits depend on the "
                                  "head index, which head sharding renumbers)")


__all__ = ["sequence_parallel_attention", "sequence_parallel_attention_varlen", "seq_to_heads", "heads_to_seq"]
