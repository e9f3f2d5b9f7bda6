"""The attention implementations compared, each a callable (q, k, v) -> out, or None if unsupported."""

from __future__ import annotations

import torch.nn.functional as F


def _sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def fn(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return fn


def get_method(name: str, alpha: float, causal: bool, N: int, D: int, window=None):
    """A callable (q, k, v) -> out, or (None, reason) when the case is not supported. window: entflash only."""
    if window is not None and name != "entflash":
        return None, "window: entflash only"
    if name == "entflash":
        import entflash

        return (lambda q, k, v: entflash.entmax_attention(q, k, v, alpha=alpha, causal=causal, window=window)), None
    if name in ("sdpa_flash", "sdpa_cudnn"):
        from torch.nn.attention import SDPBackend

        be = SDPBackend.FLASH_ATTENTION if name == "sdpa_flash" else SDPBackend.CUDNN_ATTENTION
        f = _sdpa(be)
        return (lambda q, k, v: f(q, k, v, causal)), None
    if name == "adasplash_v1":
        try:
            from adasplash import adasplash_v1
        except ImportError as e:
            return None, f"adasplash not importable ({e})"
        if D not in (16, 32, 64, 128, 256):
            return None, "head dim"
        return (lambda q, k, v: adasplash_v1(q, k, v, alpha=alpha, is_causal=causal, niter=10)), None
    if name == "adasplash_v2":
        try:
            from adasplash import adasplash_v2
        except ImportError as e:
            return None, f"adasplash not importable ({e})"
        if not causal or alpha != 1.5 or N & (N - 1):
            return None, "v2: causal, alpha=1.5 and power-of-two N only"
        return (lambda q, k, v: adasplash_v2(q, k, v, niter=1)), None
    raise ValueError(f"unknown method {name!r}")


ALL_METHODS = ("entflash", "sdpa_flash", "sdpa_cudnn", "adasplash_v1", "adasplash_v2")
