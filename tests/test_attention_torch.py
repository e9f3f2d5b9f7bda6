"""The torch path (backend="torch") against the naive float64 oracle, and API validation."""

import math

import pytest
import torch
from helpers import assert_close_rule, oracle, rand_qkv
from hypothesis import given, settings
from hypothesis import strategies as st

import entflash
from entflash.reference import naive_entmax_attention
from entflash.torch_path import chunked_entmax_attention

SHAPES = [
    # B, H, Hkv, Nq, Nk, D
    (1, 1, 1, 1, 1, 16),
    (2, 3, 3, 17, 17, 16),
    (1, 4, 2, 63, 65, 80),
    (2, 2, 1, 65, 63, 16),
    (1, 2, 2, 200, 200, 16),
]


def _grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout, allow_unused=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
@pytest.mark.parametrize("causal", [False, True])
def test_torch_path_matches_oracle(shape, alpha, causal):
    B, H, Hkv, Nq, Nk, D = shape
    q, k, v = rand_qkv(B, H, Hkv, Nq, Nk, D, requires_grad=True)
    out = entflash.entmax_attention(q, k, v, alpha=alpha, causal=causal, backend="torch")
    dout = torch.randn_like(out)
    g = _grads(out, (q, k, v), dout)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = naive_entmax_attention(qd, kd, vd, alpha=alpha, causal=causal)
    gref = _grads(ref, (qd, kd, vd), dout.double())
    low = naive_entmax_attention(*(t.detach() for t in (q, k, v)), alpha=alpha, causal=causal)
    # the float32 torch path is far inside the rule: compare directly
    assert (out.double() - ref).abs().max() < 2e-5
    for a, b in zip(g, gref):
        assert (a.double() - b).abs().max() < 1e-4
    assert low.shape == out.shape


@pytest.mark.parametrize("Nq,Nk", [(5, 17), (17, 5), (1, 64), (64, 1), (33, 33)])
def test_causal_bottom_right(Nq, Nk):
    q, k, v = rand_qkv(1, 2, 2, Nq, Nk, 16, dtype=torch.float64)
    out = entflash.entmax_attention(q, k, v, causal=True, backend="torch")
    for i in range(Nq):
        last = i + Nk - Nq  # keys 0..last visible
        if last < 0:
            assert (out[:, :, i] == 0).all()
            continue
        row = entflash.entmax_attention(q[:, :, i : i + 1], k[:, :, : last + 1], v[:, :, : last + 1], backend="torch")
        torch.testing.assert_close(out[:, :, i : i + 1], row, atol=1e-12, rtol=0)


def test_gqa_equals_repeated_heads():
    q, k, v = rand_qkv(2, 6, 2, 19, 23, 16, dtype=torch.float64)
    out = entflash.entmax_attention(q, k, v, backend="torch")
    ref = entflash.entmax_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_key_padding_mask_and_fully_masked_rows():
    q, k, v = rand_qkv(3, 2, 1, 9, 12, 16, dtype=torch.float64, requires_grad=True)
    kpm = torch.rand(3, 12) > 0.4
    kpm[1] = False  # batch 1 sees nothing
    out = entflash.entmax_attention(q, k, v, key_padding_mask=kpm, backend="torch")
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    for b in (0, 2):
        keep = kpm[b]
        ref = entflash.entmax_attention(q[b : b + 1], k[b : b + 1, :, keep], v[b : b + 1, :, keep], backend="torch")
        torch.testing.assert_close(out[b : b + 1], ref, atol=1e-12, rtol=0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad[1] == 0).all()


def test_causal_fully_masked_rows_give_zero_and_grad():
    q, k, v = rand_qkv(1, 2, 2, 10, 4, 16, requires_grad=True)
    out = entflash.entmax_attention(q, k, v, causal=True, backend="torch")  # rows 0..5 see no key
    assert (out[:, :, :6] == 0).all() and (out[:, :, 6:] != 0).any()
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


def test_alpha_one_matches_sdpa():
    q, k, v = rand_qkv(2, 4, 4, 31, 37, 16)
    for causal in (False, True):
        out = entflash.entmax_attention(q, k, v, alpha=1.0, causal=causal, backend="torch")
        if causal:  # SDPA's is_causal is top-left aligned; build the bottom-right mask
            mask = torch.ones(31, 37, dtype=torch.bool).tril(37 - 31)
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_custom_scale():
    q, k, v = rand_qkv(1, 2, 2, 13, 13, 16, dtype=torch.float64)
    out = entflash.entmax_attention(q, k, v, scale=0.7, backend="torch")
    ref = entflash.entmax_attention(q * (0.7 * 4.0), k, v, backend="torch")  # default scale 1/4
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_per_head_alpha_values_and_grad():
    H = 4
    q, k, v = rand_qkv(2, H, 2, 15, 21, 16, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([1.0, 1.3, 1.5, 2.0], dtype=torch.float64, requires_grad=True)
    out = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True, backend="torch")
    for h, a in enumerate(alpha.tolist()):
        ref = entflash.entmax_attention(q[:, h : h + 1], k[:, h // 2 : h // 2 + 1], v[:, h // 2 : h // 2 + 1], alpha=a,
                                        causal=True, backend="torch")
        torch.testing.assert_close(out[:, h : h + 1], ref, atol=1e-12, rtol=0)
    dout = torch.randn_like(out)
    g = torch.autograd.grad(out, (q, k, v, alpha), dout)
    a2 = alpha.detach().clone().requires_grad_()
    qd, kd, vd = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = naive_entmax_attention(qd, kd, vd, alpha=a2, causal=True)
    gref = torch.autograd.grad(ref, (qd, kd, vd, a2), dout)
    for a, b in zip(g, gref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_gradcheck_chunked_alpha():
    q, k, v = rand_qkv(1, 2, 1, 5, 7, 4, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([1.3, 1.7], dtype=torch.float64, requires_grad=True)
    fn = lambda q, k, v, a: chunked_entmax_attention(q, k, v, alpha=a, causal=True, chunk=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, alpha))
    fn2 = lambda q, k, v: chunked_entmax_attention(q, k, v, alpha=1.5, chunk=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn2, (q, k, v))


def test_return_stats():
    q, k, v = rand_qkv(2, 2, 2, 11, 11, 16, dtype=torch.float64)
    res = entflash.entmax_attention(q, k, v, causal=True, return_stats=True, backend="torch")
    out, tau, support = res
    assert tau.shape == (2, 2, 11) and support.shape == (2, 2, 11)
    assert tau.dtype == torch.float32 and support.dtype == torch.int32
    assert res.out is out
    s = (q @ k.transpose(-1, -2)) / 4.0
    s = s.masked_fill(~torch.ones(11, 11, dtype=torch.bool).tril(), -math.inf)
    p = torch.clamp(0.5 * s - tau.double()[..., None], min=0) ** 2
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, 11, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.equal((p > 0).sum(-1).int(), support)
    assert (support >= 1).all() and (support[..., 0] == 1).all()


def test_float16_bfloat16_within_rule():
    for dt in (torch.float16, torch.bfloat16):
        q, k, v = rand_qkv(1, 2, 2, 40, 40, 16, dtype=dt)
        out = entflash.entmax_attention(q, k, v, causal=True, backend="torch")
        assert out.dtype == dt
        ref = oracle(q, k, v, causal=True)
        low = naive_entmax_attention(q, k, v, causal=True)
        assert_close_rule(out, ref, low, floor=1e-3)


def test_chunking_memory_is_bounded():
    # the chunk size follows CHUNK_ELEMENTS, so a long sequence never builds Nq x Nk scores
    from entflash import torch_path

    assert torch_path._chunk_rows(1, 8, 16384) * 8 * 16384 <= torch_path.CHUNK_ELEMENTS


def test_empty_inputs():
    q, k, v = rand_qkv(0, 2, 2, 5, 5, 16)
    assert entflash.entmax_attention(q, k, v, backend="torch").shape == (0, 2, 5, 16)
    q, k, v = rand_qkv(1, 2, 2, 0, 5, 16)
    assert entflash.entmax_attention(q, k, v, backend="torch").shape == (1, 2, 0, 16)
    q, k, v = rand_qkv(1, 2, 2, 3, 0, 16)
    out = entflash.entmax_attention(q, k, v, backend="torch")
    assert out.shape == (1, 2, 3, 16) and (out == 0).all()


def test_varlen_matches_per_sequence():
    H, Hkv, D = 4, 2, 16
    lens_q, lens_k = [3, 0, 17, 8], [5, 4, 17, 1]
    cu_q = torch.tensor([0] + torch.tensor(lens_q).cumsum(0).tolist(), dtype=torch.int32)
    cu_k = torch.tensor([0] + torch.tensor(lens_k).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(sum(lens_q), H, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(sum(lens_k), Hkv, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(sum(lens_k), Hkv, D, dtype=torch.float64, requires_grad=True)
    for causal in (False, True):
        out = entflash.entmax_attention_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=causal, backend="torch")
        assert out.shape == (sum(lens_q), H, D)
        for b in range(4):
            qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
            ref = entflash.entmax_attention(q[qs].transpose(0, 1)[None], k[ks].transpose(0, 1)[None],
                                            v[ks].transpose(0, 1)[None], causal=causal, backend="torch")
            torch.testing.assert_close(out[qs], ref[0].transpose(0, 1), atol=1e-12, rtol=0)
        out.sum().backward()


def test_validation_errors():
    q, k, v = rand_qkv(1, 4, 2, 8, 8, 16)
    E = entflash.entmax_attention
    with pytest.raises(TypeError, match="query"):
        E(q.numpy(), k, v)
    with pytest.raises(TypeError, match="dtype"):
        E(q.half(), k, v)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        E(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="4-D"):
        E(q[0], k, v)
    with pytest.raises(ValueError, match="multiple"):
        E(q[:, :3], k, v)
    with pytest.raises(ValueError, match="head dim"):
        E(q[..., :8], k, v)
    with pytest.raises(ValueError, match="batch"):
        E(torch.cat([q, q]), k, v)
    with pytest.raises(ValueError, match="key and value"):
        E(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="alpha"):
        E(q, k, v, alpha=2.5)
    with pytest.raises(ValueError, match="alpha"):
        E(q, k, v, alpha=0.9)
    with pytest.raises(TypeError, match="alpha"):
        E(q, k, v, alpha=None)
    with pytest.raises(ValueError, match=r"alpha.*\(4,\)"):
        E(q, k, v, alpha=torch.full((2,), 1.5))
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        E(q, k, v, alpha=torch.tensor([1.5, 1.5, 3.0, 1.5]))
    with pytest.raises(TypeError, match="key_padding_mask"):
        E(q, k, v, key_padding_mask=torch.ones(1, 8))
    with pytest.raises(ValueError, match="key_padding_mask"):
        E(q, k, v, key_padding_mask=torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend"):
        E(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="scale"):
        E(q, k, v, scale=float("inf"))
    with pytest.raises(TypeError, match="causal"):
        E(q, k, v, causal="yes")


def test_varlen_validation_errors():
    q = torch.randn(10, 2, 16)
    k = torch.randn(12, 2, 16)
    cu_q = torch.tensor([0, 4, 10], dtype=torch.int32)
    cu_k = torch.tensor([0, 6, 12], dtype=torch.int32)
    V = entflash.entmax_attention_varlen
    V(q, k, k, cu_q, cu_k, 6, 6, backend="torch")
    with pytest.raises(TypeError, match="int32"):
        V(q, k, k, cu_q.long(), cu_k, 6, 6)
    with pytest.raises(ValueError, match="non-decreasing"):
        V(q, k, k, torch.tensor([0, 11, 10], dtype=torch.int32), cu_k, 11, 6)
    with pytest.raises(ValueError, match="total"):
        V(q, k, k, torch.tensor([0, 4, 9], dtype=torch.int32), cu_k, 6, 6)
    with pytest.raises(ValueError, match="max_seqlen_q"):
        V(q, k, k, cu_q, cu_k, 5, 6)
    with pytest.raises(ValueError, match="same length"):
        V(q, k, k, cu_q, torch.tensor([0, 12], dtype=torch.int32), 6, 12)
    with pytest.raises(ValueError, match="3-D"):
        V(q[None], k, k, cu_q, cu_k, 6, 6)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2), Hkv=st.integers(1, 2), G=st.integers(1, 2), Nq=st.integers(1, 40), Nk=st.integers(1, 40),
    D=st.sampled_from([1, 3, 16]), alpha=st.sampled_from([1.0, 1.25, 1.5, 2.0]), causal=st.booleans(),
    scale=st.floats(1e-3, 1e3), pad=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_property_chunked_vs_naive(B, Hkv, G, Nq, Nk, D, alpha, causal, scale, pad, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hkv * G, Nq, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, Nk, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, Nk, D, generator=g, dtype=torch.float64)
    kpm = (torch.rand(B, Nk, generator=g) > 0.3) if pad else None
    kw = dict(alpha=alpha, causal=causal, scale=scale, key_padding_mask=kpm)
    out = chunked_entmax_attention(q, k, v, chunk=7, **kw)
    ref = naive_entmax_attention(q, k, v, **kw)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-9)


def test_nan_and_inf_scores_torch_path():
    q, k, v = rand_qkv(1, 1, 1, 6, 9, 16)
    q[0, 0, 2, 0] = float("nan")
    q[0, 0, 4] = float("inf")  # +inf scores wherever k's sum is positive
    out = entflash.entmax_attention(q, k, v, backend="torch")
    assert torch.isnan(out[0, 0, 2]).all()
    assert torch.isfinite(out[0, 0, [0, 1, 3, 5]]).all()


def test_autocast_casts_inputs_like_sdpa():
    """Under torch.autocast the inputs run in the autocast dtype (mixed float32 / bfloat16 inputs, as a model's
    rotary embeddings leave them, are accepted), and the gradients reach the float32 inputs in float32."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 19, 16, generator=g) for _ in range(3))
    q.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = entflash.entmax_attention(q, k.bfloat16(), v, causal=True)
    assert out.dtype == torch.bfloat16
    ref = entflash.entmax_attention(q.detach().bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.float32 and torch.isfinite(q.grad).all()
    cu = torch.tensor([0, 7, 19], dtype=torch.int32)
    qv, kv, vv = (t[0].transpose(0, 1).contiguous() for t in (q.detach(), k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed = entflash.entmax_attention_varlen(qv, kv, vv, cu, cu, 12, 12, causal=True)
    assert packed.dtype == torch.bfloat16
    # outside autocast nothing is cast
    assert entflash.entmax_attention(q.detach(), k, v).dtype == torch.float32


def test_autocast_leaves_float64_alone():
    """As autocast does for SDPA, float64 inputs are not cast (a float64 call under autocast stays float64)."""
    q, k, v = (torch.randn(1, 2, 9, 8, dtype=torch.float64) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = entflash.entmax_attention(q, k, v)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, entflash.entmax_attention(q, k, v), rtol=0, atol=0)
