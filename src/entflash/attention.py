"""The public attention API: validation (validation.py) and dispatch to a backend.

backend="auto" runs the Triton kernels (kernels/) for CUDA tensors and the
chunked torch path (torch_path.py) for everything else; "torch" forces the
torch path on any device; "triton" forces the kernels (on CPU tensors only
under TRITON_INTERPRET=1, which is how CI runs them). A CUDA call never falls
back to the torch path silently: what the kernels do not support raises.

α = 1 (a float) on CUDA with backend="auto" is plain softmax attention and
runs torch's scaled_dot_product_attention (cuDNN / FlashAttention-2 kernels)
whenever that gives the documented semantics: no return_stats (SDPA does not
return τ), no key_padding_mask, Nk > 0 and, for causal, Nq <= Nk (rows with no
visible key must output 0, where SDPA gives NaN). Other α = 1 calls, and
backend="triton", run entflash's own softmax kernels.

Under torch.autocast, query, key and value are cast to the autocast dtype of
their device first, as autocast does for scaled_dot_product_attention: in a
model, rotary embeddings computed in float32 make q and k float32, and the
kernels' float32 dots are several times slower than bf16 ones (a 6-layer
decoder's training step at 8k tokens: 357 ms against 22 ms for sdpa, see
docs/performance.md).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import torch

from . import torch_path
from .dropout import draw_seed
from .validation import (
    check_alpha, check_attn_mask, check_backend, check_cu_seqlens, check_dropout, check_flag, check_heads,
    check_kernel_inputs, check_kernel_options, check_key_padding_mask, check_max_seqlen, check_qkv, check_scale,
    check_window,
)


def autocast_inputs(q, k, v):
    """q, k, v in the autocast dtype of q's device when autocast is on there, as autocast casts the inputs of
    scaled_dot_product_attention: floating tensors other than float64 (which autocast leaves alone)."""
    dev = q.device.type
    if not torch.is_autocast_enabled(dev):
        return q, k, v
    dt = torch.get_autocast_dtype(dev)
    eligible = lambda t: isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64  # noqa: E731
    return tuple(t.to(dt) if eligible(t) else t for t in (q, k, v))


def _autocast(fn):
    """Run `fn` on q, k, v cast by autocast_inputs, with autocast off inside, so that the call computes what the
    same call outside autocast on inputs of that dtype computes (the torch path's float32 products are not cast
    down again)."""

    @functools.wraps(fn)
    def call(q, k, v, *args, **kwargs):
        if not isinstance(q, torch.Tensor) or not torch.is_autocast_enabled(q.device.type):
            return fn(q, k, v, *args, **kwargs)
        q, k, v = autocast_inputs(q, k, v)  # before autocast is switched off
        with torch.autocast(q.device.type, enabled=False):
            return fn(q, k, v, *args, **kwargs)

    return call


@_autocast
def entmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    alpha: Union[float, torch.Tensor] = 1.5,
    causal: bool = False,
    scale: Optional[float] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    attn_mask: Optional[torch.Tensor] = None,
    window: Optional[Tuple[int, int]] = None,
    dropout_p: float = 0.0,
    generator: Optional[torch.Generator] = None,
    return_stats: bool = False,
    backend: str = "auto",
    kernel_options=None,
):
    """α-entmax attention (docs/design.md).

    q: (B, H, Nq, D); k: (B, Hkv, Nk, D); v: (B, Hkv, Nk, Dv); H % Hkv == 0
    (GQA/MQA). alpha: float in [1, 2] or a tensor of shape (H,) (per head,
    differentiable). causal: bottom-right aligned (query i sees keys
    j <= i + Nk - Nq). scale: default 1/sqrt(D). key_padding_mask: bool
    (B, Nk), True = keep. attn_mask: bool broadcastable to (B, H, Nq, Nk),
    True = attend (a float mask of 0 / -inf is converted). window:
    (left, right), flash-attn's window_size bottom-right aligned: query i
    sees keys i + Nk - Nq - left .. i + Nk - Nq + right (-1: unbounded).
    dropout_p: dropout on the weights after entmax, reproducible from
    generator (entflash/dropout.py). A query row with no visible key
    outputs 0. kernel_options: an entflash.kernels.configs.KernelOptions to
    launch the Triton kernels with instead of the table's choice for this GPU.

    Returns out (B, H, Nq, Dv); with return_stats=True an AttentionStats
    (out, tau, support) named tuple: tau (B, H, Nq) float32, support
    (B, H, Nq) int32.
    """
    check_qkv(q, k, v, 4, "(batch, heads, seq, head_dim)")
    B, H, Nq, D = q.shape
    Bk, Hkv, Nk, _ = k.shape
    if Bk != B or v.shape[0] != B:
        raise ValueError(
            f"Expected query, key and value to have the same batch size, but got query.shape[0]: {B}, "
            f"key.shape[0]: {Bk}, value.shape[0]: {v.shape[0]}"
        )
    if v.shape[1] != Hkv or v.shape[2] != Nk:
        raise ValueError(
            f"Expected key and value to have the same (heads, seq) sizes, but got key.shape: {tuple(k.shape)}, "
            f"value.shape: {tuple(v.shape)}"
        )
    check_heads(H, Hkv, q, k)
    alpha = check_alpha(alpha, H, q.device)
    scale = check_scale(scale, D)
    check_flag("causal", causal)
    check_flag("return_stats", return_stats)
    check_key_padding_mask(key_padding_mask, B, Nk, q.device)
    attn_mask = check_attn_mask(attn_mask, B, H, Nq, Nk, q.device)
    window = check_window(window)
    dropout_p = check_dropout(dropout_p, generator)
    resolved = check_backend(backend, q.device)
    check_kernel_options(kernel_options, resolved)
    plain = attn_mask is None and window is None and dropout_p == 0.0
    if resolved == "triton" and backend == "auto" and kernel_options is None and plain and _sdpa_ok(
            alpha, causal, key_padding_mask, return_stats, Nq, Nk, q):
        return _sdpa(q, k, v, causal, scale, H != Hkv)
    if resolved == "triton":
        check_kernel_inputs(q, v)
    seed = draw_seed(generator, q.device) if dropout_p > 0 else None
    kw = dict(alpha=alpha, causal=causal, scale=scale, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
              window=window, dropout_p=dropout_p, seed=seed, return_stats=return_stats)
    if resolved == "torch":
        return torch_path.chunked_entmax_attention(q, k, v, **kw)
    from .kernels import ops

    return ops.attention(q, k, v, **kw, options=kernel_options)


def _sdpa_ok(alpha, causal, key_padding_mask, return_stats, Nq, Nk, q):
    """Whether a softmax call can run torch SDPA with identical semantics (module docstring)."""
    if isinstance(alpha, torch.Tensor) or alpha != 1.0 or q.device.type != "cuda":
        return False
    # Nk = 0: rows without keys must be 0; SDPA's softmax over nothing is not
    return not return_stats and key_padding_mask is None and Nk > 0 and (not causal or Nq <= Nk)


def _sdpa(q, k, v, causal, scale, gqa):
    import torch.nn.functional as F

    Nq, Nk = q.shape[2], k.shape[2]
    if causal and Nq < Nk:
        from torch.nn.attention.bias import causal_lower_right

        # bottom-right alignment (query i sees keys j <= i + Nk - Nq), not SDPA's top-left is_causal
        mask = causal_lower_right(Nq, Nk)
        if gqa:
            g = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)


@_autocast
def entmax_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    alpha: Union[float, torch.Tensor] = 1.5,
    causal: bool = False,
    scale: Optional[float] = None,
    window: Optional[Tuple[int, int]] = None,
    dropout_p: float = 0.0,
    generator: Optional[torch.Generator] = None,
    return_stats: bool = False,
    backend: str = "auto",
    kernel_options=None,
    check_offsets: bool = True,
):
    """Packed variable-length α-entmax attention (flash-attn's varlen layout).

    q: (total_q, H, D); k, v: (total_k, Hkv, D); cu_seqlens_q/k: int32
    (batch + 1,) offsets starting at 0 and ending at the totals; max_seqlen_q/k
    at least the longest sequence. Sequence b attends q[cu_q[b]:cu_q[b+1]] to
    k[cu_k[b]:cu_k[b+1]] with the same semantics as entmax_attention
    (window, dropout_p and generator included; dropout's coordinates use
    max_seqlen_q / max_seqlen_k). Returns (total_q, H, Dv); with
    return_stats=True (out, tau, support), tau and support of shape
    (H, total_q).

    The offsets are read on the host once (one device synchronisation on CUDA)
    to validate them; a malformed cu_seqlens raises instead of reading out of
    bounds. check_offsets=False skips that on the kernels (no synchronisation,
    e.g. inside a model's forward under CUDA graphs): the caller guarantees
    int32 offsets on the inputs' device that start at 0, never decrease, end at
    the totals and differ by at most max_seqlen_q / max_seqlen_k.
    """
    check_qkv(q, k, v, 3, "(total_tokens, heads, head_dim)")
    H, D = q.shape[1], q.shape[2]
    Hkv = k.shape[1]
    if v.shape[0] != k.shape[0] or v.shape[1] != Hkv:
        raise ValueError(
            f"Expected key and value to have the same (tokens, heads) sizes, but got key.shape: {tuple(k.shape)}, "
            f"value.shape: {tuple(v.shape)}"
        )
    check_heads(H, Hkv, q, k)
    check_flag("check_offsets", check_offsets)
    resolved = check_backend(backend, q.device)
    if check_offsets or resolved == "torch":
        cq = check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], q.device)
        ck = check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], q.device)
        if len(cq) != len(ck):
            raise ValueError(
                "Expected cu_seqlens_q and cu_seqlens_k to have the same length (batch + 1), but got "
                f"{len(cq)} and {len(ck)}"
            )
        check_max_seqlen("max_seqlen_q", max_seqlen_q, cq)
        check_max_seqlen("max_seqlen_k", max_seqlen_k, ck)
    else:
        for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
            if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1 or cu.device != q.device:
                raise TypeError(f"Expected {name} to be a 1-D int32 tensor on {q.device}, but got {cu!r}")
        for name, val in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise TypeError(f"Expected {name} to be an int >= 0, but got {val!r}")
    alpha = check_alpha(alpha, H, q.device)
    scale = check_scale(scale, D)
    check_flag("causal", causal)
    check_flag("return_stats", return_stats)
    window = check_window(window)
    dropout_p = check_dropout(dropout_p, generator)
    check_kernel_options(kernel_options, resolved)
    seed = draw_seed(generator, q.device) if dropout_p > 0 else None
    kw = dict(alpha=alpha, causal=causal, scale=scale, window=window, dropout_p=dropout_p, seed=seed)
    if resolved == "torch":
        return torch_path.varlen_loop(torch_path.chunked_entmax_attention, q, k, v, cq, ck, max_seqlen_q,
                                      max_seqlen_k, return_stats=return_stats, **kw)
    check_kernel_inputs(q, v)
    from .kernels import ops

    return ops.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw,
                                return_stats=return_stats, options=kernel_options)
