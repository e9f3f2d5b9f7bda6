"""Shared test helpers: the float64 oracle and flash-attn's tolerance rule."""

import math

import torch

from entflash.reference import naive_entmax_attention


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN so unwritten outputs cannot pass."""
    return t.fill_(float("nan"))


def assert_close_rule(out, ref64, ref_lowp, factor=2.0, floor=1e-5, name="out"):
    """flash-attn's rule: |out - ref64| <= factor * |ref_lowp - ref64| + floor (max-abs)."""
    assert torch.isfinite(out).all() or not torch.isfinite(ref64).all(), f"{name}: non-finite values"
    err = (out.double() - ref64.double()).abs().max().item() if out.numel() else 0.0
    base = (ref_lowp.double() - ref64.double()).abs().max().item() if out.numel() else 0.0
    tol = factor * base + floor
    assert err <= tol, f"{name}: max err {err:.3e} > {factor} x ref err {base:.3e} + {floor:.0e}"
    return err, base


def rand_qkv(B, H, Hkv, Nq, Nk, D, dtype=torch.float32, device="cpu", Dv=None, requires_grad=False, scale=1.0):
    q = (torch.randn(B, H, Nq, D, device=device) * scale).to(dtype)
    k = (torch.randn(B, Hkv, Nk, D, device=device) * scale).to(dtype)
    v = torch.randn(B, Hkv, Nk, Dv or D, device=device).to(dtype)
    if requires_grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v


def oracle(q, k, v, **kw):
    """float64 naive reference on the CPU."""
    cast = lambda t: t.detach().double().cpu().requires_grad_(t.requires_grad)  # noqa: E731
    kw = dict(kw)
    if isinstance(kw.get("alpha"), torch.Tensor):
        kw["alpha"] = cast(kw["alpha"])
    if kw.get("key_padding_mask") is not None:
        kw["key_padding_mask"] = kw["key_padding_mask"].cpu()
    return naive_entmax_attention(cast(q), cast(k), cast(v), **kw)


def row_sum_check(p_sum, tol):
    assert (p_sum - 1).abs().max().item() <= tol


def scale_default(D):
    return 1.0 / math.sqrt(D)
