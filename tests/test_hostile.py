"""Hostile input: every case gets a clear error or the documented result, on the torch path and
on the Triton kernels (interpreter on CPU, the GPU when present)."""

import math

import pytest
import torch
from helpers import oracle, rand_qkv

import entflash

DEV = "cuda" if torch.cuda.is_available() else "cpu"
E = entflash.entmax_attention
V = entflash.entmax_attention_varlen


def test_tensors_on_different_devices_raise():
    q, k, v = rand_qkv(1, 2, 2, 5, 5, 8)
    with pytest.raises(ValueError, match="same device"):
        E(q, k.to("meta"), v)
    with pytest.raises(ValueError, match="key_padding_mask on"):
        E(q, k, v, key_padding_mask=torch.ones(1, 5, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match="alpha on"):
        E(q, k, v, alpha=torch.full((2,), 1.5, device="meta"))
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ValueError, match="cu_seqlens_q on"):
        V(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu.to("meta"), cu, 5, 5)


def test_integer_and_mixed_dtypes_raise():
    q, k, v = rand_qkv(1, 2, 2, 5, 5, 8)
    with pytest.raises(TypeError, match="same dtype"):
        E(q, k.double(), v)
    with pytest.raises(TypeError, match="same dtype"):
        E(q, k, v.half())
    with pytest.raises(TypeError):
        E(q.int(), k.int(), v.int())
    with pytest.raises(TypeError, match="floating point"):
        E(q, k, v, alpha=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="nan"):
        E(q, k, v, alpha=torch.tensor([1.5, math.nan]))


def test_malformed_cu_seqlens_raise():
    q = torch.randn(10, 2, 8)
    k = torch.randn(10, 2, 8)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    with pytest.raises(TypeError, match="int32 tensor"):
        V(q, k, k, [0, 4, 10], cu, 6, 6)
    with pytest.raises(TypeError, match="int32"):
        V(q, k, k, cu.long(), cu, 6, 6)
    with pytest.raises(ValueError, match=r"\[0\] == 0"):
        V(q, k, k, torch.tensor([1, 4, 10], dtype=torch.int32), cu, 6, 6)
    with pytest.raises(ValueError, match="1-D"):
        V(q, k, k, cu[None], cu, 6, 6)
    with pytest.raises(ValueError, match="1-D"):
        V(q, k, k, torch.tensor([], dtype=torch.int32), cu, 6, 6)
    with pytest.raises(ValueError, match="non-decreasing"):
        V(q, k, k, torch.tensor([0, -1, 10], dtype=torch.int32), cu, 6, 6)
    with pytest.raises(ValueError, match="total"):
        V(q, k, k, torch.tensor([0, 4, 9], dtype=torch.int32), cu, 6, 6)
    with pytest.raises(ValueError, match="max_seqlen_k"):
        V(q, k, k, cu, cu, 6, 5)
    with pytest.raises(TypeError, match="int"):
        V(q, k, k, cu, cu, 6.0, 6)


def test_masks_of_wrong_shape_or_dtype_raise():
    q, k, v = rand_qkv(2, 2, 2, 5, 7, 8)
    for bad in (torch.ones(2, 7), torch.ones(2, 7, dtype=torch.uint8)):
        with pytest.raises(TypeError, match="key_padding_mask"):
            E(q, k, v, key_padding_mask=bad)
    for shape in ((2, 5), (1, 7), (2, 1, 7), (7,)):
        with pytest.raises(ValueError, match="key_padding_mask"):
            E(q, k, v, key_padding_mask=torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_empty_tensors(backend):
    """B = 0, Nq = 0, Nk = 0 (rows without keys: 0) and D = 0 give empty or zero outputs and gradients."""
    for B, Nq, Nk, D in ((0, 5, 5, 16), (1, 0, 5, 16), (1, 5, 0, 16), (1, 5, 5, 0)):
        q, k, v = rand_qkv(B, 2, 1, Nq, Nk, D, device=DEV, requires_grad=True)
        if backend == "triton" and D == 0:
            continue  # the kernels' head-dim range is 16..256; see test_head_dim_zero_on_triton
        out = E(q, k, v, backend=backend, causal=True)
        assert out.shape == (B, 2, Nq, D) and (out == 0).all()
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_head_dim_zero_on_triton():
    q, k, v = rand_qkv(1, 2, 2, 5, 5, 0, device=DEV)
    out = E(q, k, v, backend="triton")
    assert out.shape == (1, 2, 5, 0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_strided_and_expanded_views_are_handled(backend):
    q = torch.randn(2, 9, 4, 16, device=DEV)[:, ::2].transpose(1, 2)  # (B, H, N=5, D), sliced and transposed
    k = torch.randn(2, 5, 1, 16, device=DEV).expand(2, 5, 2, 16).transpose(1, 2)  # stride-0 heads
    v = torch.randn(2, 16, 5, device=DEV).transpose(1, 2)[:, None].expand(2, 2, 5, 16)
    out = E(q, k, v, causal=True, backend=backend)
    ref = oracle(q, k, v, causal=True)
    assert (out.double().cpu() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_nonfinite_values(backend):
    """Documented (README): NaN in q row i or key j makes the rows that see it NaN and leaves the others exact;
    a non-finite v value makes every row that gives the key weight non-finite, and may reach rows that give it
    zero weight (0 * inf), but never yields a finite wrong value."""
    q, k, v = rand_qkv(1, 1, 1, 20, 20, 16, device=DEV)
    k[0, 0, 15] = 2 * q[0, 0, 17]  # row 17 gives key 15 weight
    clean = E(q, k, v, causal=True, backend=backend, return_stats=True)
    q2, k2 = q.clone(), k.clone()
    q2[0, 0, 3, 0] = math.nan
    k2[0, 0, 12, 1] = math.nan
    out = E(q2, k2, v, causal=True, backend=backend)
    assert torch.isnan(out[0, 0, 3]).all()
    assert torch.isnan(out[0, 0, 12:]).all()  # every row that sees key 12
    rows = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    torch.testing.assert_close(out[0, 0, rows], clean.out[0, 0, rows], atol=0, rtol=0)
    v2 = v.clone()
    v2[0, 0, 15, 2] = math.inf
    out = E(q, k, v2, causal=True, backend=backend)
    bad = ~torch.isfinite(out).all(-1)[0, 0]
    same = (out == clean.out).all(-1)[0, 0]
    assert (bad | same).all(), "a row changed to a finite wrong value"
    x = (q[0, 0] @ k[0, 0].T) * (0.5 / 4.0)  # alpha 1.5, scale 1/sqrt(16)
    weighted = (x[:, 15] > clean.tau[0, 0]) & (torch.arange(20, device=DEV) >= 15)
    assert weighted[17] and bad[weighted].all()


def test_negative_and_zero_scale_are_allowed():
    """scale is any finite float: 0 gives uniform weights over the visible keys, negative flips the scores."""
    q, k, v = rand_qkv(1, 2, 2, 6, 6, 8, dtype=torch.float64)
    out = E(q, k, v, scale=0.0, causal=True, backend="torch")
    ref = torch.cumsum(v, 2) / torch.arange(1, 7, dtype=torch.float64)[:, None]
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(E(q, k, v, scale=-0.5, backend="torch"), E(-q, k, v, scale=0.5, backend="torch"))
