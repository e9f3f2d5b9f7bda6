"""attn_mask, window and dropout on both backends, against the float64 oracle (reference.py).

The torch path runs everywhere; the kernels run in the Triton interpreter on the CPU (conftest) with 16x16 tiles,
so a window or a mask empties some tiles and crosses others. Dropout is checked exactly (the oracle receives the
backends' keep mask, entflash.dropout.keep_mask) and statistically (keep rate, unbiasedness).
"""

import pytest
import torch
from helpers import assert_close_rule, rand_qkv

import entflash
from entflash.dropout import draw_seed, keep_mask, keep_threshold, philox_word
from entflash.kernels import configs
from entflash.reference import naive_entmax_attention

DEV = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "triton"]


def _kw(backend, q, **changes):
    """backend and, for the kernels, this device's options with poisoned outputs (and `changes`)."""
    if backend == "torch":
        return {"backend": "torch"}
    opts = configs.for_device(q.device, q.dtype, q.shape[-1]).replace(poison=True, **changes)
    return {"backend": "triton", "kernel_options": opts}


def _compare(q, k, v, out, dout, grads, low_dtype=None, **kw):
    """Output and gradients within flash-attn's rule against the float64 oracle (kw: the oracle's arguments)."""
    ins = [q, k, v] + ([kw["alpha"]] if isinstance(kw.get("alpha"), torch.Tensor) else [])
    ins64 = [t.detach().double().cpu().requires_grad_() for t in ins]
    lows = [t.detach().cpu().requires_grad_() for t in ins]
    cpu = {n: (t.cpu() if isinstance(t, torch.Tensor) and n != "alpha" else t) for n, t in kw.items()}
    kw64, kwl = dict(cpu), dict(cpu)
    if isinstance(kw.get("alpha"), torch.Tensor):
        kw64["alpha"], kwl["alpha"] = ins64[3], lows[3]
    ref = naive_entmax_attention(*ins64[:3], **kw64)
    low = naive_entmax_attention(*lows[:3], **kwl)
    assert_close_rule(out.cpu(), ref, low.detach(), 2.0, 2e-5)
    if grads is not None:
        gref = torch.autograd.grad(ref, ins64, dout.double().cpu())
        glow = torch.autograd.grad(low, lows, dout.cpu())
        for name, g, gr, gl in zip("qkva", grads, gref, glow):
            assert_close_rule(g.cpu(), gr, gl, 3.0, 4e-4, name=f"d{name}")


def _run(backend, q, k, v, grad=True, options=None, **kw):
    extra = _kw(backend, q, **(options or {}))
    out = entflash.entmax_attention(q, k, v, **kw, **extra)
    if not grad:
        return out, None, None
    dout = torch.randn_like(out)
    ins = [q, k, v] + ([kw["alpha"]] if isinstance(kw.get("alpha"), torch.Tensor) else [])
    return out, dout, torch.autograd.grad(out, ins, dout)


WINDOWS = [(4, 0), (0, 0), (7, 3), (-1, 5), (10, -1), (40, 40)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_window_matches_oracle(backend, window, causal):
    """flash-attn's window_size, bottom-right aligned (Nq != Nk), with causal, GQA and padded keys."""
    q, k, v = rand_qkv(1, 2, 1, 29, 45, 16, device=DEV, requires_grad=True)
    kpm = torch.rand(1, 45, device=DEV) > 0.2
    kw = dict(window=window, causal=causal, key_padding_mask=kpm)
    out, dout, grads = _run(backend, q, k, v, **kw)
    _compare(q, k, v, out, dout, grads, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_semantics(backend):
    """Query i sees keys i + Nk - Nq - left .. i + Nk - Nq + right and nothing else: with one-hot values the
    output rows are the weights, which are zero outside that band and sum to one inside it."""
    Nq, Nk, left, right = 9, 20, 3, 2
    q, k, _ = rand_qkv(1, 2, 2, Nq, Nk, Nk, device=DEV)  # head dim Nk: the kernels need v's equal to q's
    v = torch.eye(Nk, device=DEV).expand(1, 2, Nk, Nk).contiguous()
    p = entflash.entmax_attention(q, k, v, alpha=1.0, window=(left, right), **_kw(backend, q))[0]
    i = torch.arange(Nq, device=DEV)[:, None] + (Nk - Nq)
    j = torch.arange(Nk, device=DEV)[None, :]
    band = (j >= i - left) & (j <= i + right)
    assert (p[:, ~band] == 0).all()
    assert torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-5)
    assert (p[:, band] > 0).all()  # softmax: every visible key has weight


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25, "per-head"])
def test_attn_mask_matches_oracle(backend, alpha):
    """A bool mask broadcast over heads, with causal, padding, a per-head α (dα) and rows left with nothing."""
    q, k, v = rand_qkv(2, 4, 2, 33, 40, 16, device=DEV, requires_grad=True)
    am = torch.rand(2, 1, 33, 40, device=DEV) > 0.4
    am[1, :, 5] = False  # a row with nothing visible outputs 0
    am[:, :, :, 16:32] = False  # a whole key tile emptied
    if alpha == "per-head":
        alpha = torch.tensor([1.0, 1.3, 1.5, 2.0], device=DEV, requires_grad=True)
    kw = dict(alpha=alpha, attn_mask=am, causal=True, key_padding_mask=torch.rand(2, 40, device=DEV) > 0.1)
    out, dout, grads = _run(backend, q, k, v, **kw)
    assert (out[1, :, 5] == 0).all()
    _compare(q, k, v, out, dout, grads, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(19, 21), (1, 1, 21), (2, 1, 1, 21), (1, 2, 19, 1), (2, 2, 19, 21)], ids=str)
def test_attn_mask_broadcast_shapes(backend, shape):
    """Every shape broadcastable to (B, H, Nq, Nk) means what broadcasting it means."""
    q, k, v = rand_qkv(2, 2, 2, 19, 21, 16, device=DEV)
    am = torch.rand(shape, device=DEV) > 0.3
    out = entflash.entmax_attention(q, k, v, attn_mask=am, **_kw(backend, q))
    ref = entflash.entmax_attention(q, k, v, attn_mask=am.expand(2, 2, 19, 21).clone(), **_kw(backend, q))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    _compare(q, k, v, out, None, None, attn_mask=am)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_attn_mask_is_converted(backend):
    q, k, v = rand_qkv(1, 2, 2, 17, 21, 16, device=DEV)
    am = torch.rand(1, 2, 17, 21, device=DEV) > 0.3
    fm = torch.zeros(am.shape, device=DEV).masked_fill(~am, float("-inf"))
    a = entflash.entmax_attention(q, k, v, attn_mask=am, **_kw(backend, q))
    b = entflash.entmax_attention(q, k, v, attn_mask=fm, **_kw(backend, q))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_masks_windows_and_dropout_raise():
    q, k, v = rand_qkv(2, 4, 2, 5, 7, 16)
    E = entflash.entmax_attention
    with pytest.raises(ValueError, match=r"attn_mask.*additive"):
        E(q, k, v, attn_mask=torch.randn(2, 1, 5, 7))
    with pytest.raises(TypeError, match="attn_mask"):
        E(q, k, v, attn_mask=torch.ones(2, 1, 5, 7, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"attn_mask.*\(2, 4, 5, 7\)"):
        E(q, k, v, attn_mask=torch.ones(3, 1, 5, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        E(q, k, v, attn_mask=torch.ones(7, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        E(q, k, v, attn_mask=[[True]])
    with pytest.raises(TypeError, match="window"):
        E(q, k, v, window=4)
    with pytest.raises(ValueError, match="window"):
        E(q, k, v, window=(-2, 0))
    with pytest.raises(TypeError, match="window"):
        E(q, k, v, window=(1.5, 0))
    with pytest.raises(ValueError, match="dropout_p"):
        E(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="dropout_p"):
        E(q, k, v, dropout_p=-0.1)
    with pytest.raises(TypeError, match="generator"):
        E(q, k, v, dropout_p=0.1, generator=3)
    V = entflash.entmax_attention_varlen
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ValueError, match="window"):
        V(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, torch.tensor([0, 7], dtype=torch.int32),
          5, 7, window=(-3, 1))


def test_philox_matches_python_reference():
    """dropout.philox_word is Philox-4x32-10 (checked against a plain-integer implementation)."""
    M = 0xFFFFFFFF

    def philox(seed, off):
        c = [off & M, off >> 32 & M, 0, 0]
        k0, k1 = seed & M, seed >> 32 & M
        for _ in range(10):
            p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
            c = [(p1 >> 32) ^ c[1] ^ k0, p1 & M, (p0 >> 32) ^ c[3] ^ k1, p0 & M]
            k0, k1 = (k0 + 0x9E3779B9) & M, (k1 + 0xBB67AE85) & M
        return c[0]

    seed = 0x123456789AB
    offs = torch.tensor([0, 1, 7, 2**31 + 5, 2**40 + 3, 2**50 - 1])
    assert philox_word(torch.tensor([seed]), offs).tolist() == [philox(seed, o) for o in offs.tolist()]


def _dropout_inputs():
    q, k, v = rand_qkv(2, 4, 2, 21, 25, 16, device=DEV, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.5, 1.0, "per-head"])
def test_dropout_matches_oracle_with_the_same_mask(backend, alpha):
    """Output and gradients equal the oracle's when it receives the keep mask of the same seed (dropout.py)."""
    q, k, v = _dropout_inputs()
    if alpha == "per-head":
        alpha = torch.tensor([1.0, 1.3, 1.5, 2.0], device=DEV, requires_grad=True)
    p = 0.3
    gen = torch.Generator(device=DEV).manual_seed(11)
    kw = dict(alpha=alpha, causal=True, window=(18, 0))
    out, dout, grads = _run(backend, q, k, v, dropout_p=p, generator=gen, **kw)
    seed = draw_seed(torch.Generator(device=DEV).manual_seed(11), q.device)
    keep = keep_mask(seed, p, 0, 2, 4, torch.arange(21, device=DEV), torch.arange(25, device=DEV), 21, 25)
    _compare(q, k, v, out, dout, grads, dropout_p=p, dropout_mask=keep, **kw)


def test_dropout_same_on_both_backends_and_deterministic():
    q, k, v = (t.detach() for t in _dropout_inputs())
    outs = [entflash.entmax_attention(q, k, v, dropout_p=0.4, generator=torch.Generator(device=DEV).manual_seed(3),
                                      **_kw(backend, q)) for backend in ("torch", "triton", "triton")]
    assert torch.equal(outs[1], outs[2])
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    other = entflash.entmax_attention(q, k, v, dropout_p=0.4, generator=torch.Generator(device=DEV).manual_seed(4),
                                      **_kw("triton", q))
    assert (other - outs[1]).abs().max() > 1e-3


def test_dropout_keep_rate_and_unbiased():
    """The keep rate is 1 - p and E[output] is the output without dropout (kept weights scaled by 1 / (1 - p))."""
    torch.manual_seed(0)
    seed = torch.tensor([987654321])
    for p in (0.1, 0.5):
        keep = keep_mask(seed, p, 0, 2, 8, torch.arange(200), torch.arange(300), 200, 300)
        rate = keep.float().mean().item()
        assert abs(rate - (1 - p)) < 4 * (p * (1 - p) / keep.numel()) ** 0.5
        assert keep_threshold(p) == round(p * 2**32)
    q, k, v = rand_qkv(1, 2, 2, 8, 12, 16)
    plain = entflash.entmax_attention(q, k, v, backend="torch")
    gen = torch.Generator().manual_seed(0)
    n = 2000
    mean = sum(entflash.entmax_attention(q, k, v, dropout_p=0.5, generator=gen, backend="torch") for _ in range(n)) / n
    # each output entry is a sum of at most 12 terms ±2 p v: its standard error over n draws is below 3 / sqrt(n)
    assert (mean - plain).abs().max() < 0.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_window_dropout_and_stats(backend):
    """Packed sequences with a window and dropout equal each sequence on its own (dropout coordinates of packed
    batches: sequence b, max lengths), and return_stats gives (H, total_q) statistics."""
    H, Hkv, D = 4, 2, 16
    lens_q, lens_k = [9, 0, 23], [12, 4, 23]
    cu_q = torch.tensor([0, 9, 9, 32], dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0, 12, 16, 39], dtype=torch.int32, device=DEV)
    q = torch.randn(32, H, D, device=DEV)
    k = torch.randn(39, Hkv, D, device=DEV)
    v = torch.randn(39, Hkv, D, device=DEV)
    extra = _kw(backend, q)
    res = entflash.entmax_attention_varlen(q, k, v, cu_q, cu_k, 23, 23, causal=True, window=(6, 0), dropout_p=0.2,
                                           generator=torch.Generator(device=DEV).manual_seed(1), return_stats=True,
                                           **extra)
    assert res.tau.shape == (H, 32) and res.support.shape == (H, 32)
    seed = draw_seed(torch.Generator(device=DEV).manual_seed(1), q.device)
    for b, (nq, nk) in enumerate(zip(lens_q, lens_k)):
        if nq == 0:
            continue
        qs, ks = sum(lens_q[:b]), sum(lens_k[:b])
        qb = q[qs:qs + nq].transpose(0, 1)[None].double()
        kb, vb = (t[ks:ks + nk].transpose(0, 1)[None].double() for t in (k, v))
        keep = keep_mask(seed, 0.2, b, 1, H, torch.arange(nq, device=DEV), torch.arange(nk, device=DEV), 23, 23)
        ref = naive_entmax_attention(qb, kb, vb, causal=True, window=(6, 0), dropout_p=0.2, dropout_mask=keep,
                                     return_stats=True)
        assert (res.out[qs:qs + nq].transpose(0, 1)[None].double() - ref.out).abs().max() < 1e-4
        assert torch.equal(res.support[:, qs:qs + nq].cpu(), ref.support[0].cpu())
