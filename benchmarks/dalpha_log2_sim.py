"""Does the approximate MUFU log2 in the general-α power explain dα errors near α = 1? (NOTES session 9;
session 10 found that Triton lowers tl.log2 to libdevice's log2f on sm_90, not lg2.approx, and that the
errors came from dα's formula: this models a lowering the kernels do not get.)

float64 simulation, no GPU: p = exp2(log2(y)/a) and u = exp2(log2(y)(1/a - 1)) with log2(y) perturbed by up to
2^-22.6 (lg2.approx.f32 on [0.5, 2)), τ re-solved by bisection with the perturbed power, dα by the dq kernel's
formula on p / Σp and u / Σu; prints the per-row dα error against the unperturbed value (3 keys, scores and g
of standard deviation 4).

    python benchmarks/dalpha_log2_sim.py
"""
import numpy as np
rng = np.random.default_rng(0)
E = 2.0 ** -22.6  # lg2.approx.f32 max absolute error on [0.5, 2)

def solve(s, a, err):
    f = lambda tau: np.sum(np.exp2(np.log2(np.maximum(a * (s - tau), 1e-300)) / a + err / a * (a * (s - tau) > 0)))
    lo, hi = s.max() - 1 / a, s.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 1 else (lo, mid)
    tau = 0.5 * (lo + hi)
    y = np.maximum(a * (s - tau), 0)
    p = np.where(y > 0, np.exp2(np.log2(np.maximum(y, 1e-300)) / a + err / a), 0)
    u = np.where(y > 0, np.exp2(np.log2(np.maximum(y, 1e-300)) * (1 / a - 1) + err * (1 / a - 1)), 0)
    return p, u

def dalpha(p, u, g, a):
    ph, uh = p / p.sum(), u / u.sum()
    lp = np.where(ph > 0, np.log(np.where(ph > 0, ph, 1)), 0)
    H = np.sum(ph * lp)
    return np.sum((ph - uh) * g) / a**2 - np.sum((ph * lp - uh * H) * g) / a

for alpha in (1.02, 1.05, 1.2, 1.5):
    a = alpha - 1
    errs = []
    mags = []
    for t in range(200):
        s = rng.standard_normal(3) * 4
        g = rng.standard_normal(3) * 4
        p0, u0 = solve(s, a, np.zeros(3))
        p1, u1 = solve(s, a, rng.uniform(-E, E, 3))
        errs.append(abs(dalpha(p1, u1, g, a) - dalpha(p0, u0, g, a)))
        mags.append(abs(dalpha(p0, u0, g, a)))
    print(f"alpha {alpha}: |dα| median {np.median(mags):.3g}, error from approximate log2: median {np.median(errs):.3g} max {np.max(errs):.3g}")
