"""Per-launch profile of the split τ pass (config.TAU_SPLIT = "always") on the GPU: for each of its launches,
the time (CUDA events, median of reps) and how many rows and query blocks were still unfinished before it;
and the share of the causal (query block, key tile) pairs that pass 1 dropped, that sweep 0 visits, and that
the output pass visits.

    PYTHONPATH=src python benchmarks/tau_launches.py [--alpha A] [inputs...]  # D64 N16k B2 H16 bf16 causal,
                                                                              # clustered and random, α = 1.5
"""
import sys

import torch
from stage_times import forward_setup

from entflash.kernels import api, config


def tile_shares(g, m, tmax, taumin=None, lb=None):
    """Shares of the causal (query block, key tile) pairs: dropped by pass 1 (-inf map entry), visited by
    sweep 0 (score-unit entry above the group's min of the rows' lower bounds lb, pass 1's top_bound, or
    m - 1 without it; tmax as pass 1 left it), or, with taumin, by the output pass (row-relative entry above
    the group's τ_min; tmax as the τ pass left it)."""
    L, BH = g.launch, g.B * g.H
    NG = L.n_groups
    t = tmax.float().view(BH, g.n_qblk, NG, g.n_kblk)
    j = torch.arange(g.n_kblk, device=t.device)
    last = torch.clamp((torch.arange(g.n_qblk, device=t.device) + 1) * L.BLOCK_M, max=g.Nk) - 1
    causal = j[None, :] * L.BLOCK_N <= last[:, None]  # (n_qblk, n_kblk), Nq = Nk
    total = causal.sum().item() * BH
    if taumin is not None:
        hit = (t > taumin.view(BH, g.n_qblk, NG, 1)).any(2) & causal
        return {"output": hit.sum().item() / total}
    mp = torch.full((BH, g.n_qblk * L.BLOCK_M), float("-inf"), device=m.device)
    mp[:, :g.Nq] = m.reshape(BH, g.Nq)
    mg = mp.view(BH, g.n_qblk, NG, L.ROW_GROUP)
    low = mg - 1.0
    if lb is not None:  # the τ kernel's rule: the bound where it lies in (m - 1, m), else m - 1
        lp = torch.full_like(mp, float("-inf"))
        lp[:, :g.Nq] = lb.reshape(BH, g.Nq)
        lg = lp.view(BH, g.n_qblk, NG, L.ROW_GROUP)
        low = torch.where((lg > low) & (lg < mg), lg, low)
    thr = torch.where(mg > float("-inf"), low, torch.full_like(mg, float("inf"))).amin(-1)
    hit = (t > thr[..., None]).any(2) & causal
    dropped = ((t == float("-inf")).all(2)) & causal
    return {"dropped": dropped.sum().item() / total, "sweep0": hit.sum().item() / total}


def profile(inputs, D=64, N=16384, B=2, H=16, reps=5, alpha=1.5):
    config.TAU_SPLIT = "always"
    general = api.alpha_kind(None, alpha) == config.KIND_GENERAL
    n_iters = config.MAX_ITERS_GENERAL if general else config.MAX_ITERS_EXACT
    config.SPLIT_SWEEPS = n_iters  # every sweep its own launch, to time each
    config.TAU_GATHER_FROM = None  # block-wise sweeps only (stage_times.py times the τ pass with gathering)
    q, k, v, g, bufs = forward_setup(D, inputs, True, N, B, H, alpha)  # TAU_SPLIT "always": bufs has the state
    out, m, tau, supp, tmax, taumin, lists, state = bufs[:8]
    f1, f2, _ = api.forward_stages(q, k, v, g, D ** -0.5, bufs, need_stats=False)
    first, *later = f2.launches

    times = [[] for _ in range(n_iters)]
    todo_rows, todo_blocks = [], []
    shares = {}
    for r in range(reps + 1):
        f1()
        if r == reps:
            torch.cuda.synchronize()
            shares.update(tile_shares(g, m, tmax, lb=tau))  # after pass 1, tau holds its lower bound
        evs = [torch.cuda.Event(enable_timing=True) for _ in range(n_iters + 1)]
        evs[0].record()
        first()
        evs[1].record()
        for it in range(1, n_iters):
            if r == reps:  # last rep: count unfinished rows before each launch (syncs; not timed)
                torch.cuda.synchronize()
                valid = m > float("-inf")
                todo = valid & ~(state[3] < float("inf"))
                todo_rows.append(int(todo.sum()))
                todo_blocks.append(int(todo.view(B * H, -1, g.launch.BLOCK_M).any(-1).sum()))
            later[it - 1]()
            evs[it + 1].record()
        torch.cuda.synchronize()
        if r == reps:
            shares.update(tile_shares(g, m, tmax, taumin))
        if r < reps and r > 0:
            for it in range(n_iters):
                times[it].append(evs[it].elapsed_time(evs[it + 1]))
    med = [sorted(t)[len(t) // 2] for t in times]
    print(f"{inputs} D={D} N={N} alpha={alpha}: total {sum(med):.3f} ms; launch 0 {med[0]:.3f} ms; causal tiles "
          f"dropped by pass 1 {shares['dropped']:.3f}, visited by sweep 0 {shares['sweep0']:.3f}, by the output pass "
          f"{shares['output']:.3f}", flush=True)
    for it in range(1, n_iters):
        print(f"  launch {it:2d}: {med[it]:.3f} ms, unfinished before: {todo_rows[it - 1]} rows in "
              f"{todo_blocks[it - 1]} blocks", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    a = 1.5
    if args[:1] == ["--alpha"]:
        a, args = float(args[1]), args[2:]
    for inputs in args or ["clustered", "random"]:
        profile(inputs, alpha=a)
