"""Per-stage forward times (pass 1, τ kernel, output pass) on the GPU, for the notes' profile."""
import sys

import torch
from triton.testing import do_bench

from entflash.bench.inputs import make_inputs
from entflash.kernels import api, config
from entflash.kernels.backward import dkdv_kernel, dq_kernel  # noqa: F401
from entflash.kernels.forward import output_kernel
from entflash.kernels.threshold import rowmax_kernel, tau_kernel


def stages(D, inputs, causal=True, N=16384, B=2, H=16, max_iters=None):
    q, k, v = make_inputs(inputs, B, H, N, D, causal)
    geo = api._Geom(q, k, v, None, N, N)
    dev = q.device
    kind = config.KIND_ENTMAX15
    ab = api._alpha_buffer(None, 1.5, H, dev)
    m = torch.empty(B, H, N, device=dev)
    tau = torch.empty_like(m)
    tmax = torch.full((B * H, geo.n_qblk, geo.n_kblk), float("-inf"), device=dev)
    taumin = torch.empty(B * H, geo.n_qblk, device=dev)
    lists = torch.empty((B * H, geo.n_qblk, geo.n_kblk), dtype=torch.int32, device=dev)
    out = torch.empty_like(q)
    d = api._dummy(dev)
    sq, sk, sv, so = geo.strides(q), geo.strides(k), geo.strides(v), geo.strides(out)
    smb, smh = geo.stat_strides()
    common = (*sq, *sk, 0, smb, smh, H, 1, N, N, geo.n_qblk, geo.n_kblk, D ** -0.5)
    meta = geo.meta(kind, causal, False)
    grid = geo.grid_q()
    mi = max_iters or config.MAX_ITERS_EXACT
    f1 = lambda: rowmax_kernel[grid](q, k, d, d, d, ab, m, tmax, *common, **meta)  # noqa: E731
    f2 = lambda: tau_kernel[grid](q, k, d, d, d, ab, m, tmax, tau, taumin, lists, *common, MAX_ITERS=mi,  # noqa: E731
                                  KCHUNK=config.KCHUNK, **meta)
    f3 = lambda: output_kernel[grid](q, k, v, d, d, d, ab, tau, tmax, taumin, lists, out, d, *sq, *sk, *sv, *so, 0,  # noqa: E731
                                     smb, smh, H, 1, N, N, geo.n_qblk, geo.n_kblk, D ** -0.5, NEED_STATS=False,
                                     KCHUNK=config.KCHUNK, **meta)
    f1()
    f2()
    f3()
    cand = (tmax > (taumin[..., None])).float().mean().item()
    return [round(do_bench(f, warmup=10, rep=40, return_mode="median"), 3) for f in (f1, f2, f3)], round(cand, 4)


if __name__ == "__main__":
    for D, inputs in [(64, "clustered"), (128, "clustered"), (64, "random")]:
        for mi in (None, 1, 2):
            t, cand = stages(D, inputs, max_iters=mi)
            print(f"D={D} {inputs} max_iters={mi or config.MAX_ITERS_EXACT}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, "
                  f"output-tile fraction {cand}", flush=True)
    sys.exit(0)
