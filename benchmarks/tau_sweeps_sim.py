"""CPU simulation of the τ pass's sweep count (α = 1.5): how many sweeps a 128-row program needs
with a given starting point and acceptance rule. No GPU; float64; N = 4096 keys, the last 1024
causal rows of the bench's "random" or "clustered" inputs at D = 64.

    python benchmarks/tau_sweeps_sim.py [random|clustered] [starts|compaction|bounds|topk]

Strategies:
  m-1            Halley from the lower bound m - 1 (the kernels today), accept when the closed form on
                 {x > τ_k} is consistent from below (no member under it)
  two-sided      also accept τ_k just above τ* (no non-member between the closed form and τ_k)
  gauss-δ        start at max(m - 1, τ_G - δ), τ_G solving n·E[(X - τ)_+²] = 1 for X ~ N(μ, σ²) with the
                 row's mean and variance over its visible scores (pass 1 would have to sum x and x²)
A sweep is one pass over the candidate tiles; a program runs as many as its slowest row.
"""
import math
import sys

import torch


def make_scores(kind, N=4096, D=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "random":
        q, k = rn(N, D), rn(N, D)
    else:
        seg, nseg = 256, N // 256
        c = rn(nseg, D)
        c = c / c.norm(dim=-1, keepdim=True) * math.sqrt(D)
        k = rn(N, D) + c[torch.arange(N) // seg]
        start = torch.arange(N // 64) * 64
        pick = (torch.rand(N // 64, generator=g, dtype=torch.float64) * (start // seg + 1)).long()
        q = rn(N, D) + c[pick.repeat_interleave(64)]
    rows = torch.arange(N - 1024, N)
    x = 0.5 * (q[rows] @ k.T) / math.sqrt(D)
    vis = torch.arange(N)[None, :] <= rows[:, None]
    return x.masked_fill(~vis, -math.inf), vis


def gauss_start(x, vis):
    n = vis.sum(1).double()
    xz = torch.where(vis, x, torch.zeros_like(x))
    mu = xz.sum(1) / n
    var = ((xz * xz).sum(1) / n - mu * mu).clamp_min(1e-30)
    lo, hi = torch.full_like(mu, -10.0), torch.full_like(mu, 40.0)
    for _ in range(60):  # n σ² [(1 + z²) Φ̄(z) - z φ(z)] = 1, decreasing in z
        z = 0.5 * (lo + hi)
        tail = 0.5 * torch.erfc(z / math.sqrt(2))
        dens = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        big = n * var * ((1 + z * z) * tail - z * dens) > 1
        lo, hi = torch.where(big, z, lo), torch.where(big, hi, z)
    return mu + var.sqrt() * 0.5 * (lo + hi)


def sweeps(x, tau0, two_sided):
    """Sweeps per row from tau0 with the session-5 rules (bracket from m - 1, no step-size acceptance)."""
    return sweeps_rule(x, tau0, "two" if two_sided else "members", near=False, lo_m1=True, max_sweeps=40)


def main(kind):
    x, vis = make_scores(kind)
    m = x.max(1).values
    tg = gauss_start(x, vis)
    cases = [("m-1", m - 1, False), ("two-sided", m - 1, True)]
    cases += [(f"gauss-{d}", torch.maximum(m - 1, tg - d), True) for d in (0.0, 0.05, 0.1, 0.15)]
    for name, t0, two in cases:
        s = sweeps(x, t0, two)
        blk = s.view(-1, 128).max(1).values
        print(f"{kind:9s} {name:10s} sweeps per row {s.mean().item():.2f}, per 128-row program {blk.mean().item():.2f}")



def compaction_report(kind, slots=64, N=4096):
    """Rows that sweep 0 could finish in registers (branch wip/moment-start): candidates above
    cthr = max(m - 1, τ_G - 0.2) fit in `slots` and τ* > cthr."""
    x, vis = make_scores(kind, N=N)
    m = x.max(1).values
    tg = gauss_start(x, vis)
    start = torch.where((tg - 0.1 > m - 1) & (tg - 0.1 < m), tg - 0.1, m - 1)
    cthr = torch.where(start > m - 1, torch.maximum(start - 0.1, m - 1), m - 1)
    ncand = (x > cthr[:, None]).sum(1)
    f = (torch.clamp(x - cthr[:, None], min=0) ** 2).sum(1)
    ok = (ncand <= slots) & (f >= 1)
    blocks = ok.view(-1, 128).all(1).double().mean().item()
    print(f"{kind:9s} N={N}: candidates per row median {ncand.median().item()}, max {ncand.max().item()}; "
          f"rows solvable in registers {ok.double().mean().item():.3f}; 128-row programs with no extra tile sweep {blocks:.2f}")


def second_round_report(kind, slots=64, N=16384, width=0.005):
    """Rows solvable after a second tile sweep that compacts just below the Halley iterate from sweep 0."""
    x, vis = make_scores(kind, N=N)
    m = x.max(1).values
    tg = gauss_start(x, vis)
    t0 = torch.where((tg - 0.1 > m - 1) & (tg - 0.1 < m), tg - 0.1, m - 1)

    def solvable(cthr):
        n = (x > cthr[:, None]).sum(1)
        return (n <= slots) & ((torch.clamp(x - cthr[:, None], min=0) ** 2).sum(1) >= 1)

    ok0 = solvable(torch.where(t0 > m - 1, torch.maximum(t0 - 0.1, m - 1), m - 1))
    y = x - t0[:, None]
    yz = torch.clamp(y, min=0)
    c0, c1, c2 = (y > 0).sum(1).double(), yz.sum(1), (yz * yz).sum(1)
    f, fp = c2 - 1, -2 * c1.clamp_min(1e-30)
    den = 2 * fp * fp - f * 2 * c0
    step = torch.where((f > 0) & (den > 0), -2 * f * fp / torch.where(den > 0, den, 1.0), -f / fp)
    lo, hi = torch.where(f > 0, t0, m - 1), torch.where(f > 0, m, t0)
    t1 = torch.where((t0 + step > lo) & (t0 + step < hi), t0 + step, 0.5 * (lo + hi))
    ok1 = ok0 | solvable(torch.maximum(t1 - width, lo))
    print(f"{kind:9s} N={N}: rows solvable after sweep 0 {ok0.double().mean().item():.3f}, after sweep 1 "
          f"{ok1.double().mean().item():.4f}; programs done after two tile sweeps {ok1.view(-1, 128).all(1).double().mean().item():.2f}")


def compaction_main(kind):
    for n in (4096, 16384):
        compaction_report(kind, N=n)
    second_round_report(kind)


# --- session 6: the pass-1 bound from 16 scores and the two-sided acceptance test ---------------------------
# python benchmarks/tau_sweeps_sim.py random bounds   (or clustered): 8 blocks of 128 causal rows spread over
# N = 16384 (bf16-rounded q, k), sweeps per row and per block for each start / acceptance rule.

def spread_scores(kind, N=16384, D=64, nblk=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "random":
        q, k = rn(N, D), rn(N, D)
    else:
        seg = 256
        c = rn(N // seg, D)
        c = c / c.norm(dim=-1, keepdim=True) * math.sqrt(D)
        k = rn(N, D) + c[torch.arange(N) // seg]
        start = torch.arange(N // 64) * 64
        pick = (torch.rand(N // 64, generator=g, dtype=torch.float64) * (start // seg + 1)).long()
        q = rn(N, D) + c[pick.repeat_interleave(64)]
    q, k = q.bfloat16().double(), k.bfloat16().double()
    rows = (torch.linspace(4, N // 128 - 1, nblk).long()[:, None] * 128 + torch.arange(128)).reshape(-1)
    x = 0.5 * (q[rows] @ k.T) / math.sqrt(D)
    return x.masked_fill(torch.arange(N)[None, :] > rows[:, None], -math.inf)


def threshold_of(vals):
    """Sort-based α = 1.5 threshold of the given scores alone (rows of vals; -inf = absent): a lower bound of τ."""
    s = vals.sort(1, descending=True).values
    d = s - s[:, :1]
    ok = d > -math.inf
    dz = torch.where(ok, d, torch.zeros_like(d))
    j = torch.arange(1, s.shape[1] + 1, dtype=s.dtype)
    s1, s2 = dz.cumsum(1), (dz * dz).cumsum(1)
    arg = (1 - (s2 - s1 * s1 / j)) / j
    c = s1 / j - arg.clamp_min(0).sqrt()
    c = torch.where(ok & (arg >= 0) & (c < d), c, torch.full_like(c, -1.0))
    return s[:, 0] + c.max(1).values


def tile_top4(x, BN=64):
    return threshold_of(x.view(x.shape[0], -1, BN).amax(2).topk(4, dim=1).values)


def subset_top16(x):
    """Four largest maxima of each of the four column subsets {c : (c // 2) % 4 = t} of every 64-key tile."""
    return subset_vals(x, 4, 4)


def sweeps_rule(x, tau0, rule, near=True, lo_m1=False, max_sweeps=16):
    """Sweeps per row of the kernel's α = 1.5 iteration (threshold.tau_step) from tau0; rule: "members" (closed
    form accepted when no member lies below it), "abs" (|t| <= min |x - τ|, main since session 6), "two"
    (members, or t < 0 with no non-member between). near: also accept a step below the tolerance (main since
    session 4); lo_m1: the bracket starts at m - 1 instead of at the start."""
    m = x.max(1).values
    tau = torch.where((tau0 > m - 1) & (tau0 < m), tau0, m - 1)
    lo, hi = (m - 1 if lo_m1 else tau.clone()), m.clone()
    done = torch.zeros_like(m, dtype=torch.bool)
    count = torch.zeros_like(m)
    for _ in range(max_sweeps):
        todo = ~done
        if not todo.any():
            break
        count += todo.double()
        y = x - tau[:, None]
        ins = y > 0
        yz = y.clamp_min(0)
        c0, c1, c2 = ins.sum(1).double(), yz.sum(1), (yz * yz).sum(1)
        cn = c0.clamp_min(1)
        t = c1 / cn - ((1 - (c2 - c1 * c1 / cn)) / cn).clamp_min(0).sqrt()
        tol = 1e-5 * tau.abs().clamp_min(1)
        ymin = torch.where(ins, y, torch.full_like(y, math.inf)).min(1).values
        members = (t >= -tol) & (t <= ymin + tol)
        if rule == "abs":
            ok = t.abs() <= y.abs().min(1).values + tol
        elif rule == "two":
            below = torch.where(ins, torch.full_like(y, -math.inf), y).max(1).values
            ok = members | ((t < 0) & (t > below))
        else:
            ok = members
        ok = todo & (c0 > 0) & ok
        f, fp = c2 - 1, -2 * c1.clamp_min(1e-30)
        den = 2 * fp * fp - f * 2 * c0
        step = torch.where((f > 0) & (den > 0), -2 * f * fp / torch.where(den > 0, den, torch.ones_like(den)), -f / fp)
        lo, hi = torch.where(todo & (f > 0), tau, lo), torch.where(todo & (f <= 0), tau, hi)
        cand = tau + step
        cand = torch.where((cand > lo) & (cand < hi), cand, 0.5 * (lo + hi))
        done |= ok | (todo & ((cand - tau).abs() <= tol) if near else ok)
        tau = torch.where(todo & ~ok, cand, tau)
    return count


def bounds_main(kind):
    for seed in (0, 1):
        x = spread_scores(kind, seed=seed)
        for name, b in (("tile top-4", tile_top4(x)), ("16 scores", subset_top16(x))):
            for rule in ("members", "abs", "two"):
                s = sweeps_rule(x, b, rule)
                blk = s.view(-1, 128).max(1).values
                print(f"{kind} seed {seed} {name:10s} {rule:7s}: sweeps per row {s.mean():.2f}, "
                      f"per 128-row block {blk.mean():.2f}")


# --- session 13: richer pass-1 score sets as the start (python benchmarks/tau_sweeps_sim.py random topk) -------
# Rows that sweep 0 finishes when pass 1 keeps more (or less collapsed) scores: the threshold of a set that
# contains the whole support is τ itself, so sweep 0 only verifies it.

def subset_vals(x, nsub, depth):
    """Threshold of the `depth` largest per-tile maxima of each of nsub column subsets: the thread subsets of
    fold_max4 ((c // 2) % 4), split further into nsub / 4 groups of the columns c // 8 (main: nsub 4, depth 4)."""
    R = x.shape[0]
    g = nsub // 4
    t = x.view(R, -1, g, 8 // g, 4, 2).amax(dim=(3, 5))  # (rows, tiles, g, t)
    t = t.reshape(R, t.shape[1], nsub).permute(0, 2, 1)  # (rows, nsub, tiles)
    return threshold_of(t.topk(depth, dim=2).values.reshape(R, -1))


def thread_top2(x, depth):
    """Threshold of the `depth` largest of each thread subset's per-tile two largest scores."""
    R = x.shape[0]
    t = x.view(R, -1, 8, 4, 2).permute(0, 1, 3, 2, 4).reshape(R, -1, 4, 16)  # (rows, tiles, t, 16 columns)
    v = t.topk(2, dim=3).values.permute(0, 2, 1, 3).reshape(R, 4, -1)
    return threshold_of(v.topk(depth, dim=2).values.reshape(R, -1))


def topk_main(kind):
    for seed in (0, 1):
        x = spread_scores(kind, seed=seed)
        cands = [("main: 4 subsets x top-4", subset_top16(x)), ("4 subsets x top-8", subset_vals(x, 4, 8)),
                 ("8 subsets x top-4", subset_vals(x, 8, 4)), ("8 subsets x top-8", subset_vals(x, 8, 8)),
                 ("16 subsets x top-4", subset_vals(x, 16, 4)), ("thread top-2 x depth 4", thread_top2(x, 4)),
                 ("thread top-2 x depth 8", thread_top2(x, 8)),
                 ("exact top-16", threshold_of(x.topk(16, dim=1).values)),
                 ("exact top-32", threshold_of(x.topk(32, dim=1).values))]
        for name, b in cands:
            s = sweeps_rule(x, b, "abs")
            half = s.view(-1, 64).max(1).values
            print(f"{kind} seed {seed} {name:24s}: rows done in sweep 0 {(s <= 1).double().mean():.3f}, "
                  f"sweeps per row {s.mean():.2f}, per 64-row half {half.mean():.2f}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "starts"
    {"starts": main, "compaction": compaction_main, "bounds": bounds_main, "topk": topk_main}[mode](sys.argv[1] if len(sys.argv) > 1 else "random")
