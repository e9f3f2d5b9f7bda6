"""Per-stage forward times (pass 1, τ kernel, output pass) on the GPU, for the notes' profile.

The τ pass rewrites the tile map that pass 1 wrote, so stages are timed cumulatively
(pass 1; pass 1 + τ; all three) and reported as differences.
"""
import sys

import torch
from triton.testing import do_bench

from entflash.bench.inputs import make_inputs
from entflash.kernels import api, config
from entflash.kernels.forward import output_kernel
from entflash.kernels.threshold import rowmax_kernel, tau_kernel


def stages(D, inputs, causal=True, N=16384, B=2, H=16, max_iters=None):
    q, k, v = make_inputs(inputs, B, H, N, D, causal)
    dev = q.device
    g = api._Geom(q, k, v, None, N, N).bind(None, 1.5, None, None, None, causal, dev)
    m = torch.empty(B, H, N, device=dev)
    tau = torch.empty_like(m)
    map_shape, taumin_shape = g.map_shapes()
    tmax = torch.full(map_shape, float("-inf"), device=dev)
    taumin = torch.empty(taumin_shape, device=dev)
    lists = torch.empty((B * H, g.n_qblk, g.n_kblk), dtype=torch.int32, device=dev)
    out = torch.empty_like(q)
    sq, sk, sv, so = g.strides(q), g.strides(k), g.strides(v), g.strides(out)
    common = (*sq, *sk, g.skpm, g.smb, g.smh, H, 1, N, N, g.n_qblk, g.n_kblk, D ** -0.5)
    args = (g.kpm_t, g.cq, g.ck, g.alpha_buf)
    grid = g.grid_q()
    mi = max_iters or config.MAX_ITERS_EXACT
    f1 = lambda: rowmax_kernel[grid](q, k, *args, m, tau, tmax, *common, START=config.MOMENT_START,  # noqa: E731
                                     **g.meta)
    f2 = lambda: tau_kernel[grid](q, k, *args, m, tmax, tau, taumin, lists, *common, MAX_ITERS=mi,  # noqa: E731
                                  START=config.MOMENT_START,
                                  KCHUNK=config.KCHUNK, **g.meta)
    f3 = lambda: output_kernel[grid](q, k, v, *args, tau, tmax, taumin, lists, out, api._dummy(dev), *sq, *sk, *sv, *so,  # noqa: E731
                                     g.skpm, g.smb, g.smh, H, 1, N, N, g.n_qblk, g.n_kblk, D ** -0.5,
                                     NEED_STATS=False, KCHUNK=config.KCHUNK, **g.meta)
    f12 = lambda: (f1(), f2())  # noqa: E731  (the τ pass rewrites the map: it must follow pass 1)
    f123 = lambda: (f1(), f2(), f3())  # noqa: E731
    f123()
    NG = g.launch.n_groups
    hit = tmax.view(B * H, g.n_qblk, NG, g.n_kblk) > taumin.view(B * H, g.n_qblk, NG, 1)
    cand = hit.any(2).float().mean().item()  # visited (BLOCK_M, BLOCK_N) tiles
    t1, t12, t123 = (do_bench(f, warmup=10, rep=40, return_mode="median") for f in (f1, f12, f123))
    return [round(t1, 3), round(t12 - t1, 3), round(t123 - t12, 3)], round(cand, 4)


if __name__ == "__main__":
    # `stage_times.py start`: the full pipeline with config.MOMENT_START off and on, in one process
    if sys.argv[1:2] == ["start"]:
        for D, inputs in [(64, "clustered"), (128, "clustered"), (64, "random")]:
            for start in (False, True):
                config.MOMENT_START = start
                t, cand = stages(D, inputs)
                print(f"D={D} {inputs} moment_start={start}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, "
                      f"output-tile fraction {cand}", flush=True)
        sys.exit(0)
    for D, inputs in [(64, "clustered"), (128, "clustered"), (64, "random")]:
        for mi in ((None, 1, 2) if len(sys.argv) < 2 else (None,)):
            t, cand = stages(D, inputs, max_iters=mi)
            print(f"D={D} {inputs} max_iters={mi or config.MAX_ITERS_EXACT}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, "
                  f"output-tile fraction {cand}", flush=True)
    sys.exit(0)
