"""Public attention API: validation and dispatch (DESIGN.md §2).

backend="auto" runs the Triton kernels for CUDA tensors and the chunked torch
path (reference.py) for everything else; "torch" forces the torch path on any
device; "triton" forces the kernels (on CPU tensors only under
TRITON_INTERPRET=1, which is how CI runs them). A CUDA call never falls back
to the torch path silently: what the kernels do not support raises.

α = 1 (a float) on CUDA with backend="auto" is plain softmax attention and
runs torch's scaled_dot_product_attention (cuDNN / FlashAttention-2 kernels)
whenever that gives the documented semantics: no return_stats (SDPA does not
return τ), no key_padding_mask, Nk > 0 and, for causal, Nq <= Nk (rows
with no visible key must output 0, where SDPA gives NaN). Other α = 1 calls, and
backend="triton", run entflash's own softmax kernels.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Union

import torch

from . import reference

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BACKENDS = ("auto", "torch", "triton")


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"Expected {name} to be a torch.Tensor, but got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"Expected {name} to be float16, bfloat16, float32 or float64, but got {name}.dtype: {t.dtype}"
        )


def _check_qkv(q, k, v, rank, layout):
    for name, t in (("query", q), ("key", k), ("value", v)):
        _check_tensor(name, t)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            "Expected query, key and value to have the same dtype, but got "
            f"query.dtype: {q.dtype}, key.dtype: {k.dtype}, value.dtype: {v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(
            "Expected query, key and value to be on the same device, but got "
            f"query.device: {q.device}, key.device: {k.device}, value.device: {v.device}"
        )
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dim() != rank:
            raise ValueError(f"Expected {name} to be {rank}-D {layout}, but got {name}.shape: {tuple(t.shape)}")


def _check_heads(H, Hkv, q, k, v):
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(
            f"Expected the number of query heads ({H}) to be a multiple of the number of key/value heads "
            f"({Hkv}) for GQA/MQA; got query.shape {tuple(q.shape)}, key.shape {tuple(k.shape)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"Expected query and key to have the same head dim, but got query.shape[-1]: {q.shape[-1]}, "
            f"key.shape[-1]: {k.shape[-1]}"
        )


def _check_alpha(alpha, H, device):
    if isinstance(alpha, bool) or not isinstance(alpha, (float, int, torch.Tensor)):
        raise TypeError(
            f"Expected alpha to be a float in [1, 2] or a tensor of shape ({H},), but got {type(alpha).__name__}"
        )
    if isinstance(alpha, torch.Tensor):
        if not alpha.is_floating_point():
            raise TypeError(f"Expected alpha tensor to be floating point, but got alpha.dtype: {alpha.dtype}")
        if tuple(alpha.shape) not in ((H,), ()):
            raise ValueError(
                f"Expected alpha tensor of shape ({H},) (one α per query head) or a 0-d tensor, "
                f"but got alpha.shape: {tuple(alpha.shape)}"
            )
        if alpha.device != device:
            raise ValueError(f"Expected alpha on the inputs' device {device}, but got alpha.device: {alpha.device}")
        # Values are checked where that costs no device synchronisation (CPU
        # tensors). On CUDA, keep a learnable α in range by parametrization
        # (e.g. 1 + sigmoid(θ), as integrations.transformers does).
        if alpha.device.type == "cpu" and alpha.numel() and not torch.compiler.is_compiling():
            bad = ~((alpha >= 1) & (alpha <= 2))
            if bool(bad.any()):
                raise ValueError(f"Expected alpha values in [1, 2], but found {alpha.detach()[bad].flatten()[0].item()}")
        return alpha
    val = float(alpha)
    if not math.isfinite(val) or val < 1.0 or val > 2.0:
        raise ValueError(f"Expected alpha in [1, 2] (1 = softmax, 1.5 = entmax-1.5, 2 = sparsemax), but got alpha: {alpha}")
    return val


def _check_scale(scale, D):
    if scale is None:
        return 1.0 / math.sqrt(D) if D > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (float, int)):
        raise TypeError(f"Expected scale to be a float or None, but got {type(scale).__name__}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"Expected scale to be finite, but got scale: {scale}")
    return float(scale)


def _check_flag(name, val):
    if not isinstance(val, bool):
        raise TypeError(f"Expected {name} to be a bool, but got {type(val).__name__}")


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"Expected backend to be one of {_BACKENDS}, but got backend: {backend!r}")


def _resolve_backend(backend, device):
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 for CPU tensors; got device {device}"
        )
    return backend


def entmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    alpha: Union[float, torch.Tensor] = 1.5,
    causal: bool = False,
    scale: Optional[float] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    return_stats: bool = False,
    backend: str = "auto",
):
    """α-entmax attention (DESIGN.md §1-2).

    q: (B, H, Nq, D); k: (B, Hkv, Nk, D); v: (B, Hkv, Nk, Dv); H % Hkv == 0
    (GQA/MQA). alpha: float in [1, 2] or a tensor of shape (H,) (per head,
    differentiable). causal: bottom-right aligned (query i sees keys
    j <= i + Nk - Nq). scale: default 1/sqrt(D). key_padding_mask: bool
    (B, Nk), True = keep. A query row with no visible key outputs 0.

    Returns out (B, H, Nq, Dv); with return_stats=True an AttentionStats
    (out, tau, support) named tuple: tau (B, H, Nq) float32, support
    (B, H, Nq) int32.
    """
    _check_qkv(q, k, v, 4, "(batch, heads, seq, head_dim)")
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
    _check_heads(H, Hkv, q, k, v)
    alpha = _check_alpha(alpha, H, q.device)
    scale = _check_scale(scale, D)
    _check_flag("causal", causal)
    _check_flag("return_stats", return_stats)
    _check_backend(backend)
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor):
            raise TypeError(f"Expected key_padding_mask to be a bool tensor, but got {type(key_padding_mask).__name__}")
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"Expected key_padding_mask.dtype to be torch.bool (True = keep), but got {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (B, Nk):
            raise ValueError(
                f"Expected key_padding_mask of shape (batch, key_seq) = ({B}, {Nk}), but got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(
                f"Expected key_padding_mask on {q.device}, but got key_padding_mask.device: {key_padding_mask.device}"
            )
    backend = _resolve_backend(backend, q.device)
    kw = dict(alpha=alpha, causal=causal, scale=scale, key_padding_mask=key_padding_mask, return_stats=return_stats)
    if backend == "torch":
        return reference.chunked_entmax_attention(q, k, v, **kw)
    if backend == "auto" and _sdpa_ok(alpha, causal, key_padding_mask, return_stats, Nq, Nk, q):
        return _sdpa(q, k, v, causal, scale, H != Hkv)
    from .kernels import api as kapi

    return kapi.triton_entmax_attention(q, k, v, **kw)


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


def _check_cu(name, cu, total, device):
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"Expected {name} to be an int32 tensor, but got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        raise TypeError(f"Expected {name}.dtype to be torch.int32, but got {cu.dtype}")
    if cu.dim() != 1 or cu.numel() < 1:
        raise ValueError(f"Expected {name} to be 1-D of length batch + 1, but got shape {tuple(cu.shape)}")
    if cu.device != device:
        raise ValueError(f"Expected {name} on {device}, but got {name}.device: {cu.device}")
    host = cu.tolist()
    if host[0] != 0:
        raise ValueError(f"Expected {name}[0] == 0, but got {host[0]}")
    if any(b < a for a, b in zip(host, host[1:])):
        raise ValueError(f"Expected {name} to be non-decreasing, but got {host}")
    if host[-1] != total:
        raise ValueError(f"Expected {name}[-1] == total tokens ({total}), but got {host[-1]}")
    return host


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
    backend: str = "auto",
):
    """Packed variable-length α-entmax attention (flash-attn's varlen layout).

    q: (total_q, H, D); k, v: (total_k, Hkv, D); cu_seqlens_q/k: int32
    (batch + 1,) offsets starting at 0 and ending at the totals; max_seqlen_q/k
    at least the longest sequence. Sequence b attends q[cu_q[b]:cu_q[b+1]] to
    k[cu_k[b]:cu_k[b+1]] with the same semantics as entmax_attention.
    Returns (total_q, H, Dv).

    The offsets are read on the host once (one device synchronisation on CUDA)
    to validate them; a malformed cu_seqlens raises instead of reading out of
    bounds.
    """
    _check_qkv(q, k, v, 3, "(total_tokens, heads, head_dim)")
    H, D = q.shape[1], q.shape[2]
    Hkv = k.shape[1]
    if v.shape[0] != k.shape[0] or v.shape[1] != Hkv:
        raise ValueError(
            f"Expected key and value to have the same (tokens, heads) sizes, but got key.shape: {tuple(k.shape)}, "
            f"value.shape: {tuple(v.shape)}"
        )
    _check_heads(H, Hkv, q, k, v)
    cq = _check_cu("cu_seqlens_q", cu_seqlens_q, q.shape[0], q.device)
    ck = _check_cu("cu_seqlens_k", cu_seqlens_k, k.shape[0], q.device)
    if len(cq) != len(ck):
        raise ValueError(
            f"Expected cu_seqlens_q and cu_seqlens_k to have the same length (batch + 1), but got {len(cq)} and {len(ck)}"
        )
    for name, val, cu in (("max_seqlen_q", max_seqlen_q, cq), ("max_seqlen_k", max_seqlen_k, ck)):
        if isinstance(val, bool) or not isinstance(val, int):
            raise TypeError(f"Expected {name} to be an int, but got {type(val).__name__}")
        longest = max((b - a for a, b in zip(cu, cu[1:])), default=0)
        if val < longest:
            raise ValueError(f"Expected {name} >= the longest sequence ({longest}), but got {name}: {val}")
    alpha = _check_alpha(alpha, H, q.device)
    scale = _check_scale(scale, D)
    _check_flag("causal", causal)
    _check_backend(backend)
    backend = _resolve_backend(backend, q.device)
    if backend == "torch":
        return reference.varlen_loop(
            reference.chunked_entmax_attention, q, k, v, cq, ck, alpha=alpha, causal=causal, scale=scale
        )
    from .kernels import api as kapi

    return kapi.triton_entmax_attention_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alpha=alpha, causal=causal, scale=scale
    )
