"""entflash.entmax / entmax15 / sparsemax against the entmax package, gradcheck in x and α."""

import math

import entmax as ref_pkg
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entflash
from entflash.entmax import entmax_threshold


@pytest.mark.parametrize("n", [1, 2, 17, 63, 200])
@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_entmax15_sparsemax_match_package(n, scale):
    x = torch.randn(11, n, dtype=torch.float64) * scale
    torch.testing.assert_close(entflash.entmax15(x), ref_pkg.entmax15(x, dim=-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(entflash.sparsemax(x), ref_pkg.sparsemax(x, dim=-1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", [1.1, 1.25, 1.7, 1.9])
def test_bisect_matches_package(alpha):
    x = torch.randn(9, 37, dtype=torch.float64) * 2
    ref = ref_pkg.entmax_bisect(x, alpha, n_iter=100)
    torch.testing.assert_close(entflash.entmax(x, alpha), ref, atol=1e-10, rtol=0)


def test_alpha_one_is_softmax_and_float32():
    x = torch.randn(5, 33)
    torch.testing.assert_close(entflash.entmax(x, 1.0), torch.softmax(x, -1))
    p = entflash.entmax(x, 1.5)
    assert p.dtype == torch.float32
    assert (p.sum(-1) - 1).abs().max() < 1e-5
    assert (p == 0).any()


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_dim_argument(dim):
    x = torch.randn(6, 7, 8, dtype=torch.float64)
    got = entflash.entmax(x, 1.5, dim=dim)
    ref = ref_pkg.entmax15(x, dim=dim)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


def test_half_inputs():
    x = torch.randn(4, 50) * 3
    for dt in (torch.float16, torch.bfloat16):
        p = entflash.entmax15(x.to(dt))
        assert p.dtype == dt
        ref = ref_pkg.entmax15(x.to(dt).double(), dim=-1)
        assert (p.double() - ref).abs().max() < 1e-2


def test_neg_inf_rows_and_entries():
    x = torch.randn(4, 10, dtype=torch.float64)
    x[0] = -math.inf
    x[1, :5] = -math.inf
    for alpha in (1.0, 1.3, 1.5, 2.0):
        p = entflash.entmax(x, alpha)
        assert torch.isfinite(p).all()
        assert (p[0] == 0).all()
        assert (p[1, :5] == 0).all()
        torch.testing.assert_close(p[1:].sum(-1), torch.ones(3, dtype=torch.float64))
        # the masked entries do not change the rest
        torch.testing.assert_close(p[1, 5:], entflash.entmax(x[1, 5:], alpha))


def test_per_row_alpha_tensor_matches_scalar():
    x = torch.randn(4, 3, 21, dtype=torch.float64)
    alphas = torch.tensor([1.0, 1.25, 1.5, 2.0], dtype=torch.float64).view(4, 1, 1)
    p = entflash.entmax(x, alphas, dim=-1)
    for i, a in enumerate(alphas.flatten().tolist()):
        torch.testing.assert_close(p[i], entflash.entmax(x[i], a), atol=1e-12, rtol=0)


def test_gradcheck_x():
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    for alpha in (1.0, 1.3, 1.5, 2.0):
        assert torch.autograd.gradcheck(lambda t: entflash.entmax(t, alpha), (x,))


def test_gradcheck_alpha():
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([[1.05], [1.2], [1.5], [1.8], [1.95]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, a: entflash.entmax(t, a), (x, alpha))
    # broadcast α (one per column block) sums its gradient
    a2 = torch.tensor([1.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, a: entflash.entmax(t, a), (x, a2))


def test_alpha_grad_matches_package_bisect():
    x = torch.randn(6, 12, dtype=torch.float64)
    g = torch.randn(6, 12, dtype=torch.float64)
    a = torch.full((6, 1), 1.35, dtype=torch.float64, requires_grad=True)
    (entflash.entmax(x, a) * g).sum().backward()
    a2 = torch.full((6, 1), 1.35, dtype=torch.float64, requires_grad=True)
    (ref_pkg.entmax_bisect(x, a2, n_iter=100) * g).sum().backward()
    torch.testing.assert_close(a.grad, a2.grad, atol=1e-8, rtol=1e-6)


def test_alpha_grad_at_one_is_the_limit():
    x = torch.randn(5, 9, dtype=torch.float64)
    g = torch.randn(5, 9, dtype=torch.float64)
    a = torch.ones(5, 1, dtype=torch.float64, requires_grad=True)
    (entflash.entmax(x, a) * g).sum().backward()
    h = 1e-4  # second-order one-sided difference; smaller h hits rounding at α -> 1
    f = lambda al: (entflash.entmax(x, torch.full((5, 1), al, dtype=torch.float64)) * g).sum(-1)  # noqa: E731
    fd = (f(1 + 2 * h) * -1 + 4 * f(1 + h) - 3 * f(1.0)) / (2 * h)
    torch.testing.assert_close(a.grad.flatten(), fd, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("exact", ["sort", "pivot"])
def test_threshold_methods_agree(exact):
    z = torch.randn(300, 129, dtype=torch.float64) * 3
    z[::5, ::2] = -math.inf
    z[3] = -math.inf
    z[4] = 1.0  # ties
    for alpha in (1.5, 2.0):
        t_ref, s_ref = entmax_threshold(z, alpha, exact="sort")
        t, s = entmax_threshold(z, alpha, exact=exact)
        assert math.isinf(t[3]) and s[3] == 0
        torch.testing.assert_close(t, t_ref, atol=1e-12, rtol=0)
        assert torch.equal(s, s_ref)
        p = entflash.entmax(z, alpha)
        assert torch.equal((p > 0).sum(-1).to(torch.int32), s_ref)


def test_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="alpha"):
        entflash.entmax(x, 2.5)
    with pytest.raises(ValueError, match="alpha"):
        entflash.entmax(x, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        entflash.entmax(x, float("nan"))
    with pytest.raises(TypeError, match="alpha"):
        entflash.entmax(x, "1.5")
    with pytest.raises(TypeError, match="floating"):
        entflash.entmax(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="dim"):
        entflash.entmax(x, 1.5, dim=2)
    with pytest.raises(ValueError, match="broadcast"):
        entflash.entmax(x, torch.full((3, 4), 1.5), dim=-1)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        entflash.entmax(x, torch.full((3, 1), 2.5))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    n=st.integers(1, 40),
    alpha=st.sampled_from([1.0, 1.2, 1.5, 1.75, 2.0]),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_simplex_and_order(rows, n, alpha, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g, dtype=torch.float64) * scale
    p = entflash.entmax(x, alpha)
    assert torch.isfinite(p).all()
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(rows, dtype=torch.float64), atol=1e-9, rtol=0)
    # order preserving: larger score never gets a smaller probability
    idx = x.argsort(-1)
    ps = p.gather(-1, idx)
    assert (ps[:, 1:] - ps[:, :-1] >= -1e-12).all()
    # shift invariance
    torch.testing.assert_close(entflash.entmax(x + 3.0, alpha), p, atol=1e-9, rtol=0)
    if alpha == 1.5:
        torch.testing.assert_close(p, ref_pkg.entmax15(x, dim=-1), atol=1e-10, rtol=0)
