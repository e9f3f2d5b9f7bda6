"""GPU suite (pytest -m gpu): bf16/fp16/fp32 exactness, long sequences, determinism, graphs, compile."""

import math

import pytest
import torch
from helpers import assert_close_rule

import entflash
from entflash.bench.inputs import make_inputs
from entflash.kernels import configs
from entflash.reference import naive_entmax_attention

pytestmark = pytest.mark.gpu
DEV = "cuda"


def poisoned(q):
    """This GPU's options for q with NaN-filled output buffers: an element no kernel wrote fails the check."""
    return configs.for_device(q.device, q.dtype, q.shape[-1]).replace(poison=True)


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
    out = entflash.entmax_attention(q, k, v, causal=causal, kernel_options=poisoned(q))
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
    out = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True, kernel_options=poisoned(q))
    dout = torch.randn_like(out)
    ins = [q, k, v] + ([alpha] if isinstance(alpha, torch.Tensor) else [])
    g = torch.autograd.grad(out, ins, dout)
    (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, alpha=alpha, causal=True)
    assert_close_rule(out, ref, low, 2.0, 1e-3)
    for name, a, b, c in zip("qkva", g, gref, glow):
        assert_close_rule(a, b, c, 3.0, 1e-2, name=f"d{name}")


@pytest.mark.parametrize("scale", [-0.09, 0.0])
def test_negative_and_zero_scale_bf16(scale):
    """Pass 1's negative-scale variant (q negated) and scale 0 (masked keys stay -inf) on the real launch
    configuration, with a key padding mask."""
    q, k, v = (torch.randn(1, 4, 333, 64, device=DEV, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    kpm = torch.rand(1, 333, device=DEV) > 0.2
    kw = dict(causal=True, scale=scale, key_padding_mask=kpm)
    out = entflash.entmax_attention(q, k, v, kernel_options=poisoned(q), **kw)
    dout = torch.randn_like(out)
    g = torch.autograd.grad(out, (q, k, v), dout)
    (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, **kw)
    assert_close_rule(out, ref, low, 2.0, 1e-3)
    for name, a, b, c in zip("qkv", g, gref, glow):
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


def test_alpha_one_dispatch_matches_own_kernels():
    """α = 1 (float) with backend="auto" runs SDPA where the semantics agree; it must match entflash's softmax kernels."""
    for Nq, Nk, causal, Hkv in [(300, 300, True, 4), (200, 333, True, 2), (257, 100, False, 1), (300, 120, True, 2)]:
        q = torch.randn(2, 4, Nq, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(2, Hkv, Nk, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        out = entflash.entmax_attention(q, k, v, alpha=1.0, causal=causal)
        own = entflash.entmax_attention(q, k, v, alpha=1.0, causal=causal, backend="triton")
        dout = torch.randn_like(out)
        (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, alpha=1.0, causal=causal)
        assert_close_rule(out, ref, low, 2.0, 1e-3)
        assert_close_rule(own, ref, low, 2.0, 1e-3)
        g = torch.autograd.grad(out, (q, k, v), dout)
        for name, a, b, c in zip("qkv", g, gref, glow):
            assert_close_rule(a, b, c, 3.0, 1e-2, name=f"d{name}")
        if causal and Nq > Nk:  # rows that see no key: 0, not SDPA's NaN
            assert (out[:, :, : Nq - Nk] == 0).all()
    q = torch.randn(1, 2, 5, 64, device=DEV)
    empty_k = torch.randn(1, 2, 0, 64, device=DEV)
    assert (entflash.entmax_attention(q, empty_k, empty_k, alpha=1.0) == 0).all()


def test_nan_inputs_give_nan_rows_only():
    """NaN in q row i makes row i NaN; NaN in key j makes the rows that see j NaN; the rest stays exact."""
    q, k, v = (torch.randn(1, 2, 300, 64, device=DEV, dtype=torch.bfloat16) for _ in range(3))
    q[0, 0, 10, 3] = float("nan")
    k[0, 1, 200, 5] = float("nan")
    out = entflash.entmax_attention(q, k, v, causal=True)
    bad = torch.zeros(1, 2, 300, dtype=torch.bool, device=DEV)
    bad[0, 0, 10] = True
    bad[0, 1, 200:] = True
    assert torch.isnan(out).all(-1)[bad].all()
    assert torch.isfinite(out[~bad]).all()
    clean = entflash.entmax_attention(q.nan_to_num(0.0), k.nan_to_num(0.0), v, causal=True)
    assert torch.equal(out[0, 0, :10], clean[0, 0, :10]) and torch.equal(out[0, 1, :200], clean[0, 1, :200])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("what", ["window", "attn_mask", "dropout"])
def test_masks_window_dropout_against_float64(dtype, what):
    """window (bottom-right, Nq != Nk), a broadcast bool attn_mask and dropout (the oracle gets the kernels' keep
    mask) in every dtype, D 64, GQA, causal, within the rule for out and gradients; poisoned outputs."""
    from entflash.dropout import draw_seed, keep_mask

    q, k, v = (torch.randn(2, h, n, 64, device=DEV).to(dtype).requires_grad_() for h, n in ((8, 300), (2, 333), (2, 333)))
    kw = dict(causal=True)
    call = {}
    if what == "window":
        kw["window"] = (70, 0)
    elif what == "attn_mask":
        kw["attn_mask"] = torch.rand(2, 1, 300, 333, device=DEV) > 0.5
    else:
        call = dict(dropout_p=0.2, generator=torch.Generator(device=DEV).manual_seed(7))
        seed = draw_seed(torch.Generator(device=DEV).manual_seed(7), q.device)
        kw.update(dropout_p=0.2, dropout_mask=keep_mask(seed, 0.2, 0, 2, 8, torch.arange(300, device=DEV),
                                                        torch.arange(333, device=DEV), 300, 333))
    api = {n: t for n, t in kw.items() if n != "dropout_mask"}
    api.update(call)
    out = entflash.entmax_attention(q, k, v, kernel_options=poisoned(q), **api)
    dout = torch.randn_like(out)
    (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, **kw)
    floor = 1e-5 if dtype == torch.float32 else 1e-3
    assert_close_rule(out, ref, low, 2.0, floor)
    for name, a, b, c in zip("qkv", torch.autograd.grad(out, (q, k, v), dout), gref, glow):
        assert_close_rule(a, b, c, 3.0, 10 * floor, name=f"d{name}")


def test_dropout_kernels_equal_torch_path():
    """The kernels' dropout (tl.randint) and the torch path's (dropout.philox_word) drop the same weights."""
    q, k, v = (torch.randn(1, 4, 257, 64, device=DEV) for _ in range(3))
    outs = [entflash.entmax_attention(q, k, v, causal=True, dropout_p=0.3, backend=b,
                                      generator=torch.Generator(device=DEV).manual_seed(5)) for b in ("torch", "triton")]
    assert (outs[0] - outs[1]).abs().max() < 1e-4


def test_window_visits_only_its_band():
    """A window of 4096 at N = 65536 runs far below the full causal call (the bench's window row measures it)."""
    q, k, v = make_inputs("random", 1, 4, 65536, 64, True)
    entflash.entmax_attention(q, k, v, causal=True, window=(4096, 0))  # compile
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    ev[0].record()
    w = entflash.entmax_attention(q, k, v, causal=True, window=(4096, 0))
    ev[1].record()
    entflash.entmax_attention(q, k, v, causal=True)
    ev[2].record()
    torch.cuda.synchronize()
    assert torch.isfinite(w).all()
    assert ev[0].elapsed_time(ev[1]) < 0.5 * ev[1].elapsed_time(ev[2])


from hypothesis import assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.mark.slow  # each example may compile a new set of kernel variants (~10-15 s each on the H200)
@settings(max_examples=10, deadline=None)
@given(
    B=st.integers(1, 2), Hkv=st.integers(1, 2), G=st.integers(1, 3), Nq=st.integers(1, 300), Nk=st.integers(1, 300),
    D=st.sampled_from([16, 40, 64, 80, 128]), dtype=st.sampled_from(["bfloat16", "float16", "float32"]),
    alpha=st.sampled_from([1.0, 1.25, 1.5, 2.0, "per-head"]), causal=st.booleans(), pad=st.sampled_from([0, 1, 2]),
    log_scale=st.floats(-3, 3), seed=st.integers(0, 2**31 - 1),
)
# one key and a per-head α near 1 (dα must be 0; a kernel that did not normalize p and u gave -4.9e-4)
@example(B=1, Hkv=1, G=2, Nq=22, Nk=1, D=16, dtype="float32", alpha="per-head", causal=False, pad=0, log_scale=0.0,
         seed=0)
# one key at scale 1000 (|x| ~ 1e3-1e4): a general-α τ half an ulp of |τ| off (its last Halley step dropped) and
# a float32 dk/dv reading τ in score units gave p = 1 - 1.5e-4, dv off by 3e-4
@example(B=1, Hkv=1, G=1, Nq=1, Nk=1, D=16, dtype="float32", alpha=1.25, causal=False, pad=0, log_scale=3.0, seed=0)
def test_property_gpu_vs_oracle(B, Hkv, G, Nq, Nk, D, dtype, alpha, causal, pad, log_scale, seed):
    """Random shapes (GQA, Nq != Nk), masks (pad=2: one batch entry fully masked), α (per head too), scales
    1e-3..1e3 (fp16 scores near overflow): finite output, exact zeros for rows without keys, within the rule
    for out and every gradient."""
    dt = getattr(torch, dtype)
    H = Hkv * G
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn(B, H, Nq, D, device=DEV, generator=g).to(dt).requires_grad_()
    k = torch.randn(B, Hkv, Nk, D, device=DEV, generator=g).to(dt).requires_grad_()
    v = torch.randn(B, Hkv, Nk, D, device=DEV, generator=g).to(dt).requires_grad_()
    kpm = None
    if pad:
        kpm = torch.rand(B, Nk, device=DEV, generator=g) > 0.3
        if pad == 2:
            kpm[0] = False
    if alpha == "per-head":
        alpha = (1.0 + torch.rand(H, device=DEV, generator=g)).requires_grad_()
    scale = 10.0 ** log_scale
    kw = dict(alpha=alpha, causal=causal, scale=scale, key_padding_mask=kpm)
    out = entflash.entmax_attention(q, k, v, kernel_options=poisoned(q), **kw)
    dout = torch.randn(out.shape, device=DEV, generator=g).to(dt)
    (ref, gref), (low, glow) = _ref_and_low(q, k, v, dout, **kw)
    assume(torch.isfinite(low).all())  # the low-precision reference itself overflowed: no baseline to compare to
    assert torch.isfinite(out).all()
    floor = 1e-5 if dt == torch.float32 else 1e-3
    assert_close_rule(out, ref, low, 2.0, floor)
    empty = (ref == 0).all(-1)
    assert (out[empty] == 0).all()
    ins = [q, k, v] + ([alpha] if isinstance(alpha, torch.Tensor) else [])
    grads = torch.autograd.grad(out, ins, dout)
    for name, a, b, c in zip("qkva", grads, gref, glow):
        assume(torch.isfinite(c).all())
        assert_close_rule(a, b, c, 3.0, 20 * floor, name=f"d{name}")
