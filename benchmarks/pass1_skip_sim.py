"""CPU simulation (no GPU, float64): could a cheap bound let pass 1 skip tiles on the bench's clustered inputs?

For the causal (16-row group, 64-key tile) pairs of D64 heads it prints the share that each rigorous upper bound
of the tile's maxima proves empty (bound <= every row's lower bound of m - 1, entmax α = 1.5 units), next to
the share that is empty by the exact rule (tile maximum <= m - 1: "ideal"):
  fp8 exact-eps  QK^T of per-row-scaled e4m3 q, k; rounding bound 0.129 Σ|q_d||k_d| (a second MMA)
  fp8 cs-eps     the same with the Cauchy-Schwarz bound 0.129 |q||k| (norms only)
  centroid       q·c + |q| r with the key tile's centroid c and radius r (with the exact m)

    PYTHONPATH=src python benchmarks/pass1_skip_sim.py [N]     # default 4096, two heads
"""
import math
import sys

import torch

from entflash.bench.inputs import make_inputs

N, D, H = (int(sys.argv[1]) if len(sys.argv) > 1 else 4096), 64, 2
q, k, v = make_inputs("clustered", 1, H, N, D, True, dtype=torch.bfloat16, device="cpu")
q, k = q[0].double(), k[0].double()
u = 0.5 / math.sqrt(D)  # entmax units: x = (α-1) * scale * q·k


def fp8(t):
    s = t.abs().amax(-1, keepdim=True) / 448.0  # per-row scale (a power of two would be exact; any works here)
    return (t / s).to(torch.float8_e4m3fn).double() * s


res = {}
for h in range(H):
    x = u * q[h] @ k[h].T
    xt = u * fp8(q[h]) @ fp8(k[h]).T
    # |q~_d k~_d - q_d k_d| <= (2*2^-4 + 2^-8) |q_d||k_d| for normal e4m3 values; the few subnormal ones have
    # absolute errors far below it here (the assert checks the bound on every score)
    aq, ak = q[h].abs(), k[h].abs()
    eps_exact = u * 0.129 * (aq @ ak.T)                 # needs a second MMA
    eps_cs = u * 0.129 * q[h].norm(dim=1)[:, None] * k[h].norm(dim=1)[None, :]  # Cauchy-Schwarz: norms only
    assert ((xt - x).abs() <= eps_exact + 1e-9).all()
    vis = torch.arange(N)[None, :] <= torch.arange(N)[:, None]
    x = x.masked_fill(~vis, -math.inf)
    xt = xt.masked_fill(~vis, -math.inf)
    m = x.max(1).values
    kt = k[h].view(N // 64, 64, D)
    c = kt.mean(1)
    r = (kt - c[:, None]).norm(dim=2).amax(1)
    ub_c = u * (q[h] @ c.T + q[h].norm(dim=1)[:, None] * r[None, :])  # (N, tiles): centroid + radius
    ub_c = ub_c.repeat_interleave(64, dim=1)
    for name, ubx, lbx in (("fp8 exact-eps", xt + eps_exact, xt - eps_exact), ("fp8 cs-eps", xt + eps_cs, xt - eps_cs),
                           ("centroid", ub_c, x)):
        ub = ubx.masked_fill(~vis, -math.inf)
        lb_m = lbx.masked_fill(~vis, -math.inf).max(1).values  # rigorous lower bound of m (centroid: exact m)
        tmax_ub = ub.view(N // 16, 16, N // 64, 64).amax(dim=(1, 3))
        thr = (lb_m - 1).view(N // 16, 16).min(1).values  # a group's tile is empty if its ub <= every row's m-1
        skip = tmax_ub <= thr[:, None]
        tmax = x.view(N // 16, 16, N // 64, 64).amax(dim=(1, 3))
        need = tmax > (m - 1).view(N // 16, 16).min(1).values[:, None]
        causal = tmax > -math.inf
        res.setdefault(name, []).append((skip & causal).sum().item() / causal.sum().item())
        res.setdefault("ideal", []).append((~need & causal).sum().item() / causal.sum().item())
        assert not (skip & need).any()
for k_, v_ in res.items():
    print(f"N={N} {k_:14s} skippable share of causal (16x64) tiles: {sum(v_)/len(v_):.3f}")
