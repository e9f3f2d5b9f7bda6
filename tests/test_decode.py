"""The decode path (kernels/decode.py): forward-only calls with few query rows per KV head.

Runs on CUDA when there is a GPU, else in the Triton interpreter (float32 only there: its bf16 dots are wrong).
Every call's outputs are poisoned (NaN) before the kernels run, and compared with the float64 oracle under
flash-attn's rule; τ and the support with the oracle's statistics.
"""

import pytest
import torch
from helpers import assert_close_rule, oracle

import entflash
from entflash.kernels import configs
from entflash.kernels.ops import use_decode

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32] + ([torch.bfloat16, torch.float16] if DEV == "cuda" else [])


def opts(q, **changes):
    return configs.for_device(q.device, q.dtype, q.shape[-1]).replace(poison=True, **changes)


def _qkv(B, H, Hkv, Nq, Nk, D, dtype, scale=1.0):
    q = (torch.randn(B, H, Nq, D, device=DEV) * scale).to(dtype)
    k = (torch.randn(B, Hkv, Nk, D, device=DEV) * scale).to(dtype)
    v = torch.randn(B, Hkv, Nk, D, device=DEV).to(dtype)
    return q, k, v


def _check(q, k, v, res, **kw):
    ref = oracle(q, k, v, return_stats=True, **kw)
    low_kw = dict(kw)
    if isinstance(kw.get("alpha"), torch.Tensor):
        low_kw["alpha"] = kw["alpha"].detach().cpu()
    if kw.get("key_padding_mask") is not None:
        low_kw["key_padding_mask"] = kw["key_padding_mask"].cpu()
    from entflash.reference import naive_entmax_attention

    low = naive_entmax_attention(q.cpu(), k.cpu(), v.cpu(), **low_kw)
    assert_close_rule(res.out.cpu(), ref.out, low, floor=2e-5)
    fin = torch.isfinite(ref.tau)
    assert torch.equal(fin, torch.isfinite(res.tau.cpu()))
    assert (res.tau.cpu()[fin].double() - ref.tau[fin]).abs().max().item() <= 1e-4 * (1 + ref.tau[fin].abs().max())
    assert torch.equal(res.support.cpu().long(), ref.support.long())


def _call(q, k, v, options=None, **kw):
    with torch.no_grad():
        return entflash.entmax_attention(q, k, v, backend="triton", return_stats=True,
                                         kernel_options=options or opts(q), **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25, 1.0, "per-head"])
@pytest.mark.parametrize("Nq,causal", [(1, True), (3, True), (2, False)])
def test_decode_matches_oracle(dtype, alpha, Nq, causal):
    H, Hkv = 4, 2
    q, k, v = _qkv(2, H, Hkv, Nq, 77, 32, dtype)
    if alpha == "per-head":
        alpha = torch.tensor([1.0, 1.5, 1.7, 2.0], device=DEV)
    assert use_decode(q, k, v, alpha if isinstance(alpha, torch.Tensor) else None, (H // Hkv) * Nq, None, 0.0,
                      opts(q))
    _check(q, k, v, _call(q, k, v, alpha=alpha, causal=causal), alpha=alpha, causal=causal)


@pytest.mark.parametrize("alpha", [1.5, 1.75])
def test_decode_window_and_padding(alpha):
    q, k, v = _qkv(2, 2, 1, 4, 60, 16, torch.float32, scale=2.0)
    kpm = torch.rand(2, 60, device=DEV) > 0.3
    kpm[1] = False  # a sequence with every key masked: its rows output 0, τ = +inf, support 0
    for kw in (dict(window=(7, 0), causal=True), dict(window=(5, 3)), dict(key_padding_mask=kpm, causal=True)):
        res = _call(q, k, v, alpha=alpha, **kw)
        _check(q, k, v, res, alpha=alpha, **kw)
    assert (res.out[1] == 0).all() and torch.isinf(res.tau[1]).all() and (res.support[1] == 0).all()


def test_decode_more_queries_than_keys():
    """Causal with Nq > Nk: the first Nq - Nk rows see no key and output 0."""
    q, k, v = _qkv(1, 2, 2, 5, 3, 16, torch.float32)
    res = _call(q, k, v, alpha=1.5, causal=True)
    _check(q, k, v, res, alpha=1.5, causal=True)
    assert (res.out[:, :, :2] == 0).all()


def test_decode_empty_cache():
    q, k, v = _qkv(2, 2, 1, 1, 0, 16, torch.float32)
    res = _call(q, k, v, alpha=1.5)
    assert (res.out == 0).all() and torch.isinf(res.tau).all() and (res.support == 0).all()


def test_decode_varlen():
    """Per-sequence cache lengths (one empty), one or two new tokens per sequence."""
    H, Hkv, D = 4, 2, 32
    lens_k, lens_q = [50, 0, 17, 33], [1, 1, 2, 1]
    q = torch.randn(sum(lens_q), H, D, device=DEV)
    k = torch.randn(sum(lens_k), Hkv, D, device=DEV)
    v = torch.randn(sum(lens_k), Hkv, D, device=DEV)
    cu = lambda ls: torch.tensor([0] + torch.tensor(ls).cumsum(0).tolist(), dtype=torch.int32, device=DEV)  # noqa
    with torch.no_grad():
        res = entflash.entmax_attention_varlen(q, k, v, cu(lens_q), cu(lens_k), 2, 50, alpha=1.5, causal=True,
                                               backend="triton", return_stats=True, kernel_options=opts(q))
    oq = ok = 0
    for nq, nk in zip(lens_q, lens_k):
        if nk == 0:
            assert (res.out[oq:oq + nq] == 0).all() and (res.support[:, oq:oq + nq] == 0).all()
            oq += nq
            continue
        qb, kb, vb = (t.transpose(0, 1)[None] for t in (q[oq:oq + nq], k[ok:ok + nk], v[ok:ok + nk]))
        ref = oracle(qb, kb, vb, alpha=1.5, causal=True, return_stats=True)
        got = res.out[oq:oq + nq].transpose(0, 1)[None]
        assert (got.cpu().double() - ref.out).abs().max().item() <= 1e-5
        assert torch.equal(res.support[:, oq:oq + nq].cpu().long(), ref.support[0].long())
        oq, ok = oq + nq, ok + nk


@pytest.mark.parametrize("block_n", [16, 64])
def test_decode_nonfinite_scores(block_n):
    """A NaN key makes the rows that see it NaN; a NaN key that is masked changes nothing. At block_n 64 the row's
    only chunk is the NaN one (no finite chunk maximum: the row is not empty, it is NaN)."""
    q, k, v = _qkv(1, 2, 1, 2, 40, 16, torch.float32)
    k[0, 0, 39] = float("nan")
    res = _call(q, k, v, alpha=1.5, causal=True, options=opts(q, decode_block_n=block_n))
    assert torch.isnan(res.out[0, :, 1]).all()  # the last row sees key 39
    assert torch.isfinite(res.out[0, :, 0]).all()  # the row before does not
    _check(q[:, :, :1], k[:, :, :39], v[:, :, :39], _call(q[:, :, :1], k[:, :, :39], v[:, :, :39], alpha=1.5),
           alpha=1.5)


def test_decode_equals_pipeline():
    """The decode path and the query-block pipeline (decode_rows = 0) give the same answer."""
    q, k, v = _qkv(2, 4, 2, 2, 90, 32, torch.float32)
    for alpha in (1.5, 1.3):
        with torch.no_grad():
            a = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True, backend="triton",
                                          kernel_options=opts(q))
            b = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True, backend="triton",
                                          kernel_options=opts(q, decode_rows=0))
        assert (a - b).abs().max().item() <= 2e-5


def test_decode_route():
    """The decode path runs only where it applies: few rows per KV head, no mask or dropout, no gradient."""
    q, k, v = _qkv(1, 4, 1, 4, 20, 16, torch.float32)
    o = opts(q)
    assert use_decode(q, k, v, None, 16, None, 0.0, o)
    assert not use_decode(q, k, v, None, 17, None, 0.0, o)
    assert not use_decode(q, k, v, None, 4, torch.ones(1, 1, 4, 20, dtype=torch.bool), 0.0, o)
    assert not use_decode(q, k, v, None, 4, None, 0.1, o)
    assert not use_decode(q, k, v, None, 4, None, 0.0, o.replace(decode_rows=0))
    qg = q.clone().requires_grad_()
    assert not use_decode(qg, k, v, None, 4, None, 0.0, o)
    with torch.no_grad():
        assert use_decode(qg, k, v, None, 4, None, 0.0, o)
    # a call that needs the gradient still gets it (the pipeline)
    out = entflash.entmax_attention(qg, k, v, alpha=1.5, backend="triton", kernel_options=o)
    out.sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()


def test_decode_options_validated():
    o = configs.interpreter_options(torch.float32)
    with pytest.raises(ValueError, match="decode_rows"):
        o.replace(decode_rows=65)
    with pytest.raises(ValueError, match="decode_block_n"):
        o.replace(decode_block_n=8)


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="needs a CUDA GPU")
@pytest.mark.parametrize("alpha", [1.5, 1.25])
def test_decode_long_cache_gpu(alpha):
    """A cache long enough for many score programs and listed chunks, bf16, GQA 4:1, D 128."""
    q, k, v = _qkv(2, 8, 2, 1, 8192 + 37, 128, torch.bfloat16)
    res = _call(q, k, v, alpha=alpha, causal=True)
    _check(q, k, v, res, alpha=alpha, causal=True)
