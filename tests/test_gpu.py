"""GPU suite (pytest -m gpu): bf16/fp16/fp32 exactness, long sequences, determinism, graphs, compile."""

import math

import pytest
import torch
from helpers import assert_close_rule

import entflash
from entflash.bench.inputs import make_inputs
from entflash.reference import naive_entmax_attention

pytestmark = pytest.mark.gpu
DEV = "cuda"


def _ref_and_low(q, k, v, dout, **kw):
    """float64 oracle and the same naive reference in the input dtype (out and grads)."""
    res = []
    for cast in (torch.float64, None):
        ins = [t.detach().to(cast or t.dtype).requires_grad_() for t in (q, k, v)]
        a = kw.get("alpha", 1.5)
        kk = dict(kw)
        if isinstance(a, torch.Tensor):
            kk["alpha"] = a.detach().to(cast or torch.float32).requires_grad_()
            ins.append(kk["alpha"])
        out = naive_entmax_attention(*ins[:3], **kk)
        grads = torch.autograd.grad(out, ins, dout.to(out.dtype))
        res.append((out, grads))
    return res


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("D", [64, 80, 128])
@pytest.mark.parametrize("causal", [True, False])
def test_dtypes_against_float64(dtype, D, causal):
    B, H, Hkv, N = 1, 4, 2, 777
    q, k, v = (torch.randn(B, h, N, D, device=DEV, dtype=dtype).requires_grad_() for h in (H, Hkv, Hkv))
    out = entflash.entmax_attention(q, k, v, causal=causal)
    dout = torch.randn_like(out)
    g = torch.autograd.grad(out, (q, k, v), dout)
    (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, causal=causal)
    floor = 1e-5 if dtype == torch.float32 else 1e-3
    assert_close_rule(out, ref, low, 2.0, floor)
    for name, a, b, c in zip("qkv", g, gref, glow):
        assert_close_rule(a, b, c, 3.0, 10 * floor, name=f"d{name}")


@pytest.mark.parametrize("alpha", [1.0, 1.25, 2.0, "per-head"])
def test_alphas_bf16(alpha):
    q, k, v = (torch.randn(2, 4, 300, 64, device=DEV, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    if alpha == "per-head":
        alpha = torch.tensor([1.0, 1.2, 1.5, 2.0], device=DEV, requires_grad=True)
    out = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True)
    dout = torch.randn_like(out)
    ins = [q, k, v] + ([alpha] if isinstance(alpha, torch.Tensor) else [])
    g = torch.autograd.grad(out, ins, dout)
    (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, alpha=alpha, causal=True)
    assert_close_rule(out, ref, low, 2.0, 1e-3)
    for name, a, b, c in zip("qkva", g, gref, glow):
        assert_close_rule(a, b, c, 3.0, 1e-2, name=f"d{name}")


def _sampled_rows_check(q, k, v, out, tau, rows, causal):
    """out and Σp = 1 on sampled rows against the float32 torch path."""
    D = q.shape[-1]
    for h in (0, q.shape[1] - 1):
        for r in rows:
            last = r + 1 if causal else k.shape[2]
            qr = q[:, h : h + 1, r : r + 1].float()
            kr, vr = k[:, h : h + 1, :last].float(), v[:, h : h + 1, :last].float()
            ref = entflash.entmax_attention(qr, kr, vr, backend="torch")
            err = (out[:, h : h + 1, r : r + 1].float() - ref).abs().max().item()
            assert err < 2e-2, (h, r, err)
            x = (qr @ kr.transpose(-1, -2)) * (0.5 / math.sqrt(D))
            p = torch.clamp(x - tau[:, h : h + 1, r : r + 1, None], min=0) ** 2
            assert abs(p.sum().item() - 1.0) < 1e-3, (h, r, p.sum().item())


@pytest.mark.parametrize("inputs", ["clustered", "random"])
def test_long_sequence_sampled_rows(inputs):
    N = 32768
    q, k, v = make_inputs(inputs, 1, 2, N, 64, True)
    res = entflash.entmax_attention(q, k, v, causal=True, return_stats=True)
    assert torch.isfinite(res.out).all()
    rows = [0, 1, 4095, 16383, 20000, N - 1]
    _sampled_rows_check(q, k, v, res.out, res.tau, rows, True)


def test_deterministic_backward():
    q, k, v = make_inputs("clustered", 1, 8, 4096, 64, True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    grads = []
    for _ in range(2):
        out = entflash.entmax_attention(q, k, v, causal=True)
        grads.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_cuda_graph_capture_fwd_bwd():
    q, k, v = (torch.randn(1, 4, 1024, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn(1, 4, 1024, 64, device=DEV, dtype=torch.bfloat16)

    def step():
        out = entflash.entmax_attention(q, k, v, causal=True)
        return torch.autograd.grad(out, (q, k, v), dout)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static = step()
    eager = step()
    g.replay()
    torch.cuda.synchronize()
    for a, b in zip(static, eager):
        assert torch.equal(a, b)


def test_torch_compile_fullgraph():
    q, k, v = (torch.randn(1, 4, 512, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    alpha = torch.full((4,), 1.5, device=DEV, requires_grad=True)

    @torch.compile(fullgraph=True)
    def f(q, k, v, alpha):
        return entflash.entmax_attention(q, k, v, alpha=alpha, causal=True)

    out = f(q, k, v, alpha)
    out.float().sum().backward()
    ref = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True)
    assert torch.equal(out, ref)
    assert alpha.grad is not None and torch.isfinite(alpha.grad).all()


def test_varlen_bf16_matches_torch():
    lens = [1000, 1, 2048, 513]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=DEV)
    T = sum(lens)
    q, k, v = (torch.randn(T, h, 64, device=DEV, dtype=torch.bfloat16) for h in (4, 2, 2))
    out = entflash.entmax_attention_varlen(q, k, v, cu, cu, max(lens), max(lens), causal=True)
    ref = entflash.entmax_attention_varlen(q.float(), k.float(), v.float(), cu, cu, max(lens), max(lens), causal=True,
                                           backend="torch")
    assert (out.float() - ref).abs().max() < 2e-2


def test_memory_fwd_bwd_below_adasplash2():
    B, H, N, D = 2, 16, 16384, 64
    q, k, v = (torch.randn(B, H, N, D, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn_like(q)
    entflash.entmax_attention(q, k, v, causal=True).backward(dout)
    for t in (q, k, v):
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    entflash.entmax_attention(q, k, v, causal=True).backward(dout)
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(f"fwd+bwd extra memory: {extra:.1f} MiB")
    assert extra <= 325
