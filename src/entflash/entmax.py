"""Pure-PyTorch α-entmax: exact thresholds, probabilities and autograd (x and α).

Conventions (docs/design.md, "The math"): for scores z and α in (1, 2],

    p_j = [(α-1) z_j - τ]_+ ^ (1/(α-1)),    Σ_j p_j = 1.

α = 1 is softmax (τ is then the log-sum-exp and p = exp(z - τ)). Entries equal
to -inf are masked: they never get weight and do not count as keys. A row whose
entries are all -inf has no valid key: its probabilities are all 0 and τ = +inf.

How τ is found (`entmax_threshold`), row by row on a compacted candidate set:
only entries with (α-1) z_j > (α-1) max(z) - 1 can be in the support, so the
rows are first reduced to those candidates (usually a few percent of the row).
Then, on the candidates:

* α = 1.5 and α = 2 (given as floats): the exact sort-based closed form;
* any other α (or a per-row α tensor): a safeguarded Halley-bisection in
  float64 that runs until the Newton step or the bracket is below the float64
  resolution (not a fixed number of iterations).
"""

from __future__ import annotations

import math
from typing import Union

import torch

AlphaLike = Union[float, int, torch.Tensor]

__all__ = ["entmax", "entmax15", "sparsemax", "entmax_threshold"]

_MAX_HALLEY_ITERS = 200  # never reached in practice: float64 bisection alone needs < 64


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------
# thresholds
# ----------------------------------------------------------------------------


def _segment_sum(values: torch.Tensor, seg: torch.Tensor, nseg: int) -> torch.Tensor:
    out = torch.zeros(nseg, dtype=values.dtype, device=values.device)
    return out.index_add_(0, seg, values)


def _sorted_threshold(w: torch.Tensor, seg: torch.Tensor, nseg: int, alpha: float):
    """Exact τ' for α in {1.5, 2} on compacted candidates (the sort-based closed form).

    w: float64 candidate values a·(z - max) in (-1, 0], seg: their row ids
    (non-decreasing). The candidates are laid out in a (rows, most candidates)
    matrix padded with -inf, sorted per row, and the closed form is evaluated
    on every prefix. Returns (tau', support); rows without candidates get +inf, 0.
    """
    dev = w.device
    counts = torch.bincount(seg, minlength=nseg)
    kmax = int(counts.max()) if nseg else 0
    if kmax == 0:
        return torch.full((nseg,), math.inf, dtype=torch.float64, device=dev), counts
    starts = torch.cumsum(counts, 0) - counts
    col = torch.arange(w.numel(), device=dev) - starts[seg]
    mat = torch.full((nseg, kmax), -math.inf, dtype=torch.float64, device=dev)
    mat[seg, col] = w
    ws = mat.sort(dim=-1, descending=True).values
    valid = ws > -math.inf
    wz = torch.where(valid, ws, 0.0)
    kk = torch.arange(1, kmax + 1, device=dev, dtype=torch.float64)
    s1 = wz.cumsum(-1)
    if alpha == 2.0:
        tau_k = (s1 - 1.0) / kk
    else:  # 1.5: Σ_{i≤k} (w_i - τ)^2 = 1, smaller root
        s2 = (wz * wz).cumsum(-1)
        mean = s1 / kk
        delta = ((1.0 - (s2 - s1 * mean)) / kk).clamp_min(0.0)
        tau_k = mean - torch.sqrt(delta)
    in_support = valid & (tau_k < ws)
    support = in_support.sum(-1)
    tau = tau_k.gather(1, (support - 1).clamp_min(0)[:, None])[:, 0]
    tau = torch.where(support > 0, tau, torch.full_like(tau, math.inf))
    return tau, support


def _dense_lower_bound(zs, a, kind, steps: int = 2):
    """A proven lower bound of τ' per row from Newton steps on the dense rows.

    zs = a (z - max z) (row maximum 0, masked = -inf). Starting at -1, Newton
    steps on the convex decreasing f never pass the root; the result is lowered
    by a margin far above the rounding error of the work-dtype sums (near the
    root |f'| >= 1, so a sum error e moves the step by at most e). This only
    shrinks the candidate set that the exact solvers then work on.
    """
    R = zs.shape[0]
    tau = torch.full((R, 1), -1.0, dtype=zs.dtype, device=zs.device)
    y = torch.empty_like(zs)
    for _ in range(steps):
        torch.sub(zs, tau, out=y).clamp_(min=0.0)
        if kind == 2.0:
            f = y.sum(-1, keepdim=True) - 1.0
            fp = -torch.sign(y).sum(-1, keepdim=True)  # y >= 0: counts the positives (bool sums are slow on CPU)
        elif kind == 1.5:
            f = (y * y).sum(-1, keepdim=True) - 1.0
            fp = -2.0 * y.sum(-1, keepdim=True)
        else:
            s = (1.0 / a)[:, None]
            t = y.pow(s)
            f = t.sum(-1, keepdim=True) - 1.0
            # 0^0 = 1 where s = 1 (a per-row α = 2) overstates |f'|: the step
            # only gets shorter and stays a lower bound.
            fp = -s * y.pow(s - 1.0).sum(-1, keepdim=True)
        tau = torch.where(fp < 0, tau - f / torch.where(fp < 0, fp, -1.0), tau)
    margin = 1e-4 if zs.dtype != torch.float64 else 1e-12
    lb = tau[:, 0].to(torch.float64)
    lb = (lb - margin * (1.0 + lb.abs())).clamp_min(-1.0)
    return torch.where(torch.isfinite(lb), lb, torch.full_like(lb, -1.0))


def _drop_below(w, seg, lo):
    """Drop candidates at or below a row's proven lower bound of τ' (they can
    never be in the support); only when that removes at least a quarter."""
    keep = w > lo[seg]
    nkeep = int(keep.sum())
    if nkeep * 4 <= w.numel() * 3:
        return w[keep], seg[keep]
    return w, seg


def _pivot_threshold(w: torch.Tensor, seg: torch.Tensor, nseg: int, alpha: float, lo: torch.Tensor):
    """Exact τ' for α in {1.5, 2} on compacted candidates, without sorting.

    Newton steps from a lower bound lo of τ' (f is convex and decreasing, so
    they rise monotonically towards τ* and every iterate's set {w > τ} contains
    the support). At each step the closed form is solved on that set and
    accepted as soon as it is consistent (no member of the set lies below it):
    a consistent closed-form root is the unique root, so the result is exact,
    like the sort-based one. For α = 2 the Newton step is the closed form
    (Michelot's algorithm), which terminates in finitely many steps.
    """
    dev = w.device
    tau = lo.to(torch.float64).clone()
    out = torch.full((nseg,), math.inf, dtype=torch.float64, device=dev)
    done = torch.bincount(seg, minlength=nseg) == 0
    for _ in range(64):
        w, seg = _drop_below(w, seg, tau)
        ins = w > tau[seg]
        wi = torch.where(ins, w, 0.0)
        k = _segment_sum(ins.to(torch.float64), seg, nseg)
        s1 = _segment_sum(wi, seg, nseg)
        ksafe = k.clamp_min(1.0)
        if alpha == 2.0:
            t_s = (s1 - 1.0) / ksafe
            newton = t_s
        else:
            s2 = _segment_sum(wi * wi, seg, nseg)
            mean = s1 / ksafe
            t_s = mean - torch.sqrt(((1.0 - (s2 - s1 * mean)) / ksafe).clamp_min(0.0))
            f = s2 - 2 * tau * s1 + k * tau * tau - 1.0
            fp = 2 * (s1 - k * tau)
            newton = tau + f / fp.clamp_min(1e-300)
        wmin = torch.full((nseg,), math.inf, dtype=torch.float64, device=dev)
        wmin = wmin.scatter_reduce(0, seg, torch.where(ins, w, math.inf), reduce="amin")
        ok = ~done & (k > 0) & (wmin >= t_s) & (t_s >= tau)
        out = torch.where(ok, t_s, out)
        done = done | ok
        if bool(done.all()):
            break
        tau = torch.where(done, tau, torch.maximum(newton, tau))
    out = torch.where(done, out, tau)  # cap reached (ties at rounding level): Newton's value
    support = _segment_sum((w > out[seg]).to(torch.int64), seg, nseg)
    return out, support


def _halley_threshold(w, seg, nseg: int, a: torch.Tensor, lo: torch.Tensor):
    """τ' for any α = 1 + a in (1, 2] on compacted candidates (float64).

    Solves f(τ) = Σ_j (w_j - τ)_+^(1/a) - 1 = 0 on the bracket
    [lo, 0] (lo >= -1 a proven lower bound; f(0) = -1 since every w <= 0). f is convex and
    decreasing, so a Halley step is taken when it stays strictly inside the
    bracket and the bracket is bisected otherwise. A row stops when the Newton
    step |f/f'| or the bracket width is below 8 float64 ulps.
    """
    dev = w.device
    a = a.to(torch.float64)
    lo = lo.to(torch.float64).clone()
    hi = torch.zeros(nseg, dtype=torch.float64, device=dev)
    tau = lo.clone()
    s = 1.0 / a
    tol = 8 * torch.finfo(torch.float64).eps
    active = torch.ones(nseg, dtype=torch.bool, device=dev)
    for _ in range(_MAX_HALLEY_ITERS):
        w, seg = _drop_below(w, seg, lo)
        s_e = s[seg]
        y = (w - tau[seg]).clamp_min(0.0)
        pos = y > 0
        ylog = torch.where(pos, torch.log(torch.where(pos, y, 1.0)), 0.0)
        t0 = torch.where(pos, torch.exp(s_e * ylog), 0.0)
        ysafe = torch.where(pos, y, 1.0)
        t1 = t0 / ysafe
        t2 = t1 / ysafe
        f = _segment_sum(t0, seg, nseg) - 1.0
        fp = -s * _segment_sum(t1, seg, nseg)
        fpp = s * (s - 1.0) * _segment_sum(t2, seg, nseg)
        lo = torch.where(f > 0, tau, lo)
        hi = torch.where(f <= 0, tau, hi)
        newton = torch.where(fp < 0, f / fp.clamp_max(-1e-300), torch.zeros_like(f))
        denom = 2 * fp * fp - f * fpp
        halley = torch.where(denom > 0, 2 * f * fp / denom.clamp_min(1e-300), newton)
        cand = tau - halley
        inside = (cand > lo) & (cand < hi) & (fp < 0)
        cand = torch.where(inside, cand, 0.5 * (lo + hi))
        done = (newton.abs() <= tol * tau.abs().clamp_min(1.0)) | (hi - lo <= tol) | (f == 0)
        tau = torch.where(active & ~done, cand, tau)
        active = active & ~done
        if not bool(active.any()):
            break
    support = _segment_sum((w > tau[seg]).to(torch.int64), seg, nseg)
    tau = torch.where(support > 0, tau, torch.full_like(tau, math.inf))
    return tau, support


def shifted_threshold(zs: torch.Tensor, a_rows: torch.Tensor, kind, exact: str = "sort"):
    """τ' and support from zs = a (z - max z) (rows with a valid key have max 0).

    zs: (R, n) float32/64, masked and empty rows -inf. a_rows: (R,) float64,
    α - 1 > 0 per row. kind: 1.5 or 2.0 for the exact closed forms, None for
    Halley-bisection. Returns (tau' float64 (R,), support int64 (R,)); rows
    without a candidate get +inf, 0.
    """
    R = zs.shape[0]
    if exact == "sort" and kind is not None:
        lo = torch.full((R,), -1.0, dtype=torch.float64, device=zs.device)
    else:
        lo = _dense_lower_bound(zs, a_rows.to(zs.dtype), kind)
    rows, cols = (zs > lo.to(zs.dtype)[:, None]).nonzero(as_tuple=True)
    w = zs[rows, cols].to(torch.float64)
    if kind is None:
        return _halley_threshold(w, rows, R, a_rows, lo)
    if exact == "sort":
        return _sorted_threshold(w, rows, R, kind)
    return _pivot_threshold(w, rows, R, kind, lo)


def entmax_threshold(z: torch.Tensor, alpha: AlphaLike = 1.5, exact: str = "sort"):
    """τ and support size for each row of z (last dim), in the units of docs/design.md (τ of (α-1)·z).

    z: (R, n) float scores, -inf = masked. alpha: float, or a tensor of shape
    (R,) (one α per row). Returns (tau, support): tau (R,) in the work dtype
    (float32, or float64 for float64 input); support (R,) int32. α = 1 rows get
    the log-sum-exp and the number of valid keys. Rows without a valid key get
    τ = +inf and support 0. exact selects the exact method for α = 1.5 and 2:
    "sort" (the sort-based closed form) or "pivot" (Newton steps with a
    verified closed form; no sort, faster on long rows).
    """
    if z.dim() != 2:
        raise ValueError(f"entmax_threshold: z must be 2-D (rows, n), got shape {tuple(z.shape)}")
    R, n = z.shape
    wd = _work_dtype(z.dtype)
    dev = z.device
    z = z.to(wd)
    if R == 0 or n == 0:
        return (torch.full((R,), math.inf, dtype=wd, device=dev), torch.zeros(R, dtype=torch.int32, device=dev))
    if isinstance(alpha, torch.Tensor):
        a_rows = (alpha.detach().to(torch.float64).reshape(-1).expand(R) - 1.0).contiguous()
        is_soft = a_rows == 0
        any_soft = bool(is_soft.any())
        a_rows = torch.where(is_soft, torch.full_like(a_rows, 0.5), a_rows)
        kind = None
    else:
        a_val = float(alpha) - 1.0
        if a_val == 0.0:
            return _softmax_threshold(z)
        any_soft = False
        a_rows = torch.full((R,), a_val, dtype=torch.float64, device=dev)
        kind = (1.0 + a_val) if a_val in (0.5, 1.0) else None
    m = z.amax(dim=-1)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    zs = (z - m_safe[:, None]) * a_rows.to(wd)[:, None]
    tau_s, support = shifted_threshold(zs, a_rows, kind, exact)
    tau = tau_s + a_rows * m_safe.to(torch.float64)
    tau = torch.where(torch.isnan(m) | (m == math.inf), torch.full_like(tau, math.nan), tau)
    if any_soft:
        lse, nv = _softmax_threshold(z)
        tau = torch.where(is_soft, lse.to(torch.float64), tau)
        support = torch.where(is_soft, nv.to(support.dtype), support)
    return tau.to(wd), support.to(torch.int32)


def _softmax_threshold(z: torch.Tensor):
    lse = torch.logsumexp(z, dim=-1)
    nvalid = (z > -math.inf).to(z.dtype).sum(dim=-1)
    lse = torch.where(nvalid > 0, lse, torch.full_like(lse, math.inf))
    return lse, nvalid.to(torch.int32)


def entmax_probs(z: torch.Tensor, tau: torch.Tensor, alpha: AlphaLike, normalize: bool = True) -> torch.Tensor:
    """p = [(α-1) z - τ]_+^(1/(α-1)) (α = 1: exp(z - τ)) in float32/64.

    z (..., n), τ (..., 1); alpha: float or a tensor broadcastable to z with
    size 1 on the last dim. τ = +inf gives a zero row, NaN propagates.
    normalize divides by Σp (a rounding-level correction; rows summing to 0
    stay 0)."""
    wd = _work_dtype(z.dtype)
    z = z.to(wd)
    tau = tau.to(wd)
    if isinstance(alpha, torch.Tensor):
        a = alpha.detach().to(wd) - 1.0
        soft = a == 0
        a_safe = torch.where(soft, torch.ones_like(a), a)
        p = (a_safe * z - tau).clamp_min(0.0).pow(1.0 / a_safe)
        if bool(soft.any()):
            p = torch.where(soft, torch.exp(z - tau), p)
    else:
        a = float(alpha) - 1.0
        if a == 0.0:
            p = torch.exp(z - tau)
        else:
            p = (a * z - tau).clamp_min(0.0)
            if a == 0.5:
                p = p * p
            elif a != 1.0:
                p = p.pow(1.0 / a)
    if normalize:
        tot = p.sum(dim=-1, keepdim=True)
        p = p / torch.where(tot > 0, tot, torch.ones_like(tot))
    return p


def entmax_chunk_(s: torch.Tensor, alpha: AlphaLike, exact: str = "pivot"):
    """Threshold and unnormalized probabilities of a score block, in place.

    s: (..., n) float32/64 scores, -inf = masked; it is overwritten with p
    (not divided by Σp). alpha: float, or a tensor broadcastable to s with
    size 1 on the last dim. Returns (p, tau (...,) float64, support (...,) int64)
    with the conventions of entmax_threshold.
    """
    shape = s.shape
    n = shape[-1]
    R = math.prod(shape[:-1])
    dev = s.device
    if R == 0 or n == 0:
        return s, torch.full(shape[:-1], math.inf, dtype=torch.float64, device=dev), torch.zeros(shape[:-1], dtype=torch.int64, device=dev)
    s2 = s.view(R, n)
    if not isinstance(alpha, torch.Tensor) and float(alpha) == 1.0:
        lse, nv = _softmax_threshold(s2)
        s2.sub_(lse[:, None]).exp_()
        return s, lse.to(torch.float64).view(shape[:-1]), nv.to(torch.int64).view(shape[:-1])
    soft_rows = soft_p = None
    if isinstance(alpha, torch.Tensor):
        a_rows = (alpha.detach().to(torch.float64).expand(shape[:-1] + (1,)).reshape(-1) - 1.0).contiguous()
        soft = a_rows == 0
        if bool(soft.any()):
            soft_rows = soft.nonzero()[:, 0]
            soft_lse, soft_nv = _softmax_threshold(s2[soft_rows])
            soft_p = torch.exp(s2[soft_rows] - soft_lse[:, None])
            a_rows = torch.where(soft, torch.full_like(a_rows, 0.5), a_rows)
        kind = None
    else:
        a_val = float(alpha) - 1.0
        a_rows = torch.full((R,), a_val, dtype=torch.float64, device=dev)
        kind = (1.0 + a_val) if a_val in (0.5, 1.0) else None
    m = s2.amax(dim=-1)
    bad = torch.isnan(m) | (m == math.inf)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    a_w = a_rows.to(s.dtype)
    s2.sub_(m_safe[:, None]).mul_(a_w[:, None])
    tau_s, support = shifted_threshold(s2, a_rows, kind, exact)
    tau_s = torch.where(bad, torch.full_like(tau_s, math.nan), tau_s)
    s2.sub_(tau_s.to(s.dtype)[:, None]).clamp_(min=0.0)
    if kind == 1.5:
        s2.square_()
    elif kind is None:
        s2.pow_((1.0 / a_rows).to(s.dtype)[:, None])
    tau = tau_s + a_rows * m_safe.to(torch.float64)
    if soft_rows is not None:
        s2[soft_rows] = soft_p
        tau[soft_rows] = soft_lse.to(torch.float64)
        support[soft_rows] = soft_nv.to(support.dtype)
    return s, tau.view(shape[:-1]), support.view(shape[:-1])


# ----------------------------------------------------------------------------
# gradients (shared with the attention backward)
# ----------------------------------------------------------------------------


def entmax_weights(p: torch.Tensor, alpha: AlphaLike) -> torch.Tensor:
    """u = p^(2-α) on the support, 0 off it (α = 2: the support indicator)."""
    if isinstance(alpha, torch.Tensor):
        e = (2.0 - alpha.detach()).to(p.dtype)
        pos = p > 0
        return torch.where(pos, torch.exp(e * torch.log(torch.where(pos, p, 1.0))), 0.0)
    e = 2.0 - float(alpha)
    if e == 0.0:
        return (p > 0).to(p.dtype)
    if e == 0.5:
        return p.sqrt()
    if e == 1.0:
        return p
    pos = p > 0
    return torch.where(pos, p.clamp_min(1e-300 if p.dtype == torch.float64 else 1e-38).pow(e), 0.0)


def entmax_grad_input(p: torch.Tensor, g: torch.Tensor, alpha: AlphaLike) -> torch.Tensor:
    """dL/dz = u (g - Σ u g / Σ u) along the last dim."""
    u = entmax_weights(p, alpha)
    su = u.sum(-1, keepdim=True)
    delta = (u * g).sum(-1, keepdim=True) / torch.where(su > 0, su, torch.ones_like(su))
    return u * (g - delta)


def entmax_grad_alpha(p: torch.Tensor, g: torch.Tensor, alpha: AlphaLike) -> torch.Tensor:
    """dL/dα per row (last dim reduced, kept as size 1), given g = dL/dp.

    For a = α - 1 > 0, with ũ = u / Σu and H = Σ p ln p:
        dp_j/dα = (p_j - ũ_j) / a² - (p_j ln p_j - ũ_j H) / a.
    At α = 1 (softmax, ℓ = ln p) the limit is dp_j/dα = p_j (Σ_i p_i ℓ_i² - ℓ_j²) / 2.
    """
    al = alpha.detach().to(p.dtype) if isinstance(alpha, torch.Tensor) else torch.tensor(float(alpha), dtype=p.dtype, device=p.device)
    a = al - 1.0
    pos = p > 0
    logp = torch.where(pos, torch.log(torch.where(pos, p, 1.0)), 0.0)
    plogp = p * logp
    u = entmax_weights(p, alpha)
    su = u.sum(-1, keepdim=True)
    ut = u / torch.where(su > 0, su, torch.ones_like(su))
    H = plogp.sum(-1, keepdim=True)
    a_safe = torch.where(a == 0, torch.ones_like(a), a)
    gen = ((p - ut) * g).sum(-1, keepdim=True) / (a_safe * a_safe) - ((plogp - ut * H) * g).sum(-1, keepdim=True) / a_safe
    l2 = p * logp * logp
    lim = 0.5 * (l2.sum(-1, keepdim=True) * (p * g).sum(-1, keepdim=True) - (l2 * g).sum(-1, keepdim=True))
    return torch.where(a == 0, lim, gen)


# ----------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------


def _check_alpha(alpha, x: torch.Tensor, dim: int, fname: str):
    """Validate alpha for entmax(x, alpha, dim); returns alpha as a float or a
    tensor with x.dim() dims (size 1 along dim)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (float, int, torch.Tensor)):
        raise TypeError(f"{fname}: alpha must be a float in [1, 2] or a floating tensor, got {type(alpha).__name__}")
    if not isinstance(alpha, torch.Tensor):
        val = float(alpha)
        if not math.isfinite(val) or val < 1.0 or val > 2.0:
            raise ValueError(f"{fname}: alpha must be in [1, 2], got {alpha}")
        return val
    if not alpha.is_floating_point():
        raise TypeError(f"{fname}: alpha tensor must be floating point, got dtype {alpha.dtype}")
    if alpha.device != x.device:
        raise ValueError(f"{fname}: alpha is on {alpha.device} but x is on {x.device}")
    want = list(x.shape)
    want[dim] = 1
    ok = alpha.dim() <= x.dim()
    if ok:
        a = alpha.reshape((1,) * (x.dim() - alpha.dim()) + tuple(alpha.shape))
        ok = all(sa in (1, sw) for sa, sw in zip(a.shape, want))
    if not ok:
        raise ValueError(
            f"{fname}: alpha tensor of shape {tuple(alpha.shape)} must broadcast to {tuple(want)} "
            f"(x's shape {tuple(x.shape)} with size 1 along dim={dim})"
        )
    if a.numel() and not torch.compiler.is_compiling():
        bad = ~((a >= 1) & (a <= 2))
        if bool(bad.any()):
            raise ValueError(f"{fname}: alpha values must lie in [1, 2], found {a[bad].flatten()[0].item()}")
    return a


class _EntmaxFunction(torch.autograd.Function):
    """p = entmax(x, alpha) along dim; alpha_t (same rank as x, size 1 on dim) or alpha_f."""

    @staticmethod
    def forward(ctx, x, alpha_t, alpha_f, dim):
        xt = x.movedim(dim, -1)
        shape = xt.shape
        x2 = xt.reshape(-1, shape[-1])
        if alpha_t is not None:
            a_rows = alpha_t.expand(*x.shape[:dim], 1, *x.shape[dim + 1 :]).movedim(dim, -1).reshape(-1)
            tau, _ = entmax_threshold(x2, a_rows)
            p2 = entmax_probs(x2, tau[:, None], a_rows[:, None])
        else:
            a_rows = None
            tau, _ = entmax_threshold(x2, alpha_f)
            p2 = entmax_probs(x2, tau[:, None], alpha_f)
        p = p2.to(x.dtype).reshape(shape).movedim(-1, dim)
        ctx.dim = dim
        ctx.alpha_f = alpha_f
        ctx.alpha_shape = alpha_t.shape if alpha_t is not None else None
        ctx.save_for_backward(p, a_rows if a_rows is not None else p.new_empty(0))
        return p

    @staticmethod
    def backward(ctx, grad):
        p, a_rows = ctx.saved_tensors
        dim = ctx.dim
        wd = _work_dtype(p.dtype)
        pt = p.movedim(dim, -1)
        shape = pt.shape
        p2 = pt.reshape(-1, shape[-1]).to(wd)
        g2 = grad.movedim(dim, -1).reshape(-1, shape[-1]).to(wd)
        alpha = a_rows[:, None].to(wd) if ctx.alpha_shape is not None else ctx.alpha_f
        dx = None
        if ctx.needs_input_grad[0]:
            dx = entmax_grad_input(p2, g2, alpha).to(p.dtype).reshape(shape).movedim(-1, dim)
        dalpha = None
        if ctx.alpha_shape is not None and ctx.needs_input_grad[1]:
            ga = entmax_grad_alpha(p2, g2, alpha).reshape(shape[:-1] + (1,)).movedim(-1, dim)
            dalpha = ga.sum_to_size(ctx.alpha_shape).to(a_rows.dtype)
        return dx, dalpha, None, None


def entmax(x: torch.Tensor, alpha: AlphaLike = 1.5, dim: int = -1) -> torch.Tensor:
    """α-entmax of x along dim.

    alpha: a float in [1, 2] (1 = softmax, 1.5 = entmax-1.5, 2 = sparsemax), or
    a floating tensor broadcastable to x with size 1 along dim (one α per row),
    values in [1, 2]. Differentiable in x and, for a tensor alpha, in alpha.
    Entries equal to -inf get probability 0; a row of only -inf gives zeros.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"entmax: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"entmax: x must be a floating tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError("entmax: x must have at least one dimension, got a 0-d tensor")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise ValueError(f"entmax: dim={dim!r} is out of range for a tensor with {x.dim()} dims")
    dim = dim % x.dim()
    alpha = _check_alpha(alpha, x, dim, "entmax")
    if isinstance(alpha, torch.Tensor):
        return _EntmaxFunction.apply(x, alpha, None, dim)
    return _EntmaxFunction.apply(x, None, alpha, dim)


def entmax15(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """entmax with α = 1.5 (exact, sort-based)."""
    return entmax(x, 1.5, dim)


def sparsemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """entmax with α = 2 (Euclidean projection onto the simplex; exact, sort-based)."""
    return entmax(x, 2.0, dim)
