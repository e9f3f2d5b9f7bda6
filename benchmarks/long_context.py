"""Very long context on one GPU: forward+backward at N = 262144, B = 1, H = 8, D = 64, bf16, causal,
clustered inputs. Checks (no N×N reference is possible):

* out and τ on sampled rows (start, middle, the last rows: offsets past 2^31 / D elements of the score matrix)
  against the float32 torch path on that row's visible keys, and Σp = 1 there;
* dq on sampled rows against the torch path's autograd on that row;
* two exact identities of the backward over all keys: Σ_j dv_j = Σ_i dO_i (rows sum to one) and
  Σ_j dk_j = 0 (Σ_j dz_ij = 0 for every row), per head, up to rounding;
* peak memory and time.

    python benchmarks/long_context.py [N]
"""
import math
import sys
import time

import torch

import entflash
from entflash.bench.inputs import make_inputs


def main(N=262144, B=1, H=8, D=64):
    q, k, v = make_inputs("clustered", B, H, N, D, True)
    dout = torch.randn_like(q)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = entflash.entmax_attention(qg, kg, vg, causal=True, return_stats=True)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    res.out.backward(dout)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(f"N={N} B={B} H={H} D={D} bf16 causal clustered (first call, includes compilation): "
          f"fwd {t1 - t0:.3f} s, bwd {t2 - t1:.3f} s, peak extra memory {peak:.0f} MiB", flush=True)
    # steady-state times
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    for t in (qg, kg, vg):
        t.grad = None
    ev[0].record()
    out = entflash.entmax_attention(qg, kg, vg, causal=True)
    ev[1].record()
    out.backward(dout)
    ev[2].record()
    torch.cuda.synchronize()
    print(f"steady state: fwd {ev[0].elapsed_time(ev[1]):.1f} ms, bwd {ev[1].elapsed_time(ev[2]):.1f} ms", flush=True)
    ok = bool(torch.isfinite(res.out).all() and all(torch.isfinite(t.grad).all() for t in (qg, kg, vg)))
    print("all finite:", ok, flush=True)
    worst = {"out": 0.0, "psum": 0.0, "dq": 0.0}
    rows = [0, 1, 4095, 65537, N // 2 + 3, N - 4097, N - 2, N - 1]
    for h in (0, H - 1):
        for r in rows:
            qr = q[:, h : h + 1, r : r + 1].float().requires_grad_()
            kr, vr = k[:, h : h + 1, : r + 1].float(), v[:, h : h + 1, : r + 1].float()
            ref = entflash.entmax_attention(qr, kr, vr, backend="torch")
            (dq_ref,) = torch.autograd.grad(ref, qr, dout[:, h : h + 1, r : r + 1].float())
            worst["out"] = max(worst["out"], (res.out[:, h : h + 1, r : r + 1].float() - ref).abs().max().item())
            worst["dq"] = max(worst["dq"], (qg.grad[:, h : h + 1, r : r + 1].float() - dq_ref).abs().max().item()
                              / max(dq_ref.abs().max().item(), 1e-6))
            x = (qr.detach() @ kr.transpose(-1, -2)) * (0.5 / math.sqrt(D))
            p = torch.clamp(x - res.tau[:, h : h + 1, r : r + 1, None], min=0) ** 2
            worst["psum"] = max(worst["psum"], abs(p.sum().item() - 1.0))
    print(f"sampled rows {rows} of heads 0 and {H - 1}: max |out - ref| {worst['out']:.2e}, "
          f"max |Σp - 1| {worst['psum']:.2e}, max relative dq error {worst['dq']:.2e}", flush=True)
    sdv = vg.grad.float().sum(2)
    sdo = dout.float().sum(2)
    dv_err = ((sdv - sdo).abs().max() / sdo.abs().max()).item()
    dk_err = (kg.grad.float().sum(2).abs().max() / kg.grad.float().abs().sum(2).max()).item()
    print(f"identities: max|Σ_j dv_j - Σ_i dO_i| / max|Σ dO| = {dv_err:.2e}; "
          f"max|Σ_j dk_j| / max Σ_j |dk_j| = {dk_err:.2e}", flush=True)
    passed = ok and worst["out"] < 2e-2 and worst["psum"] < 1e-3 and worst["dq"] < 5e-2 and dv_err < 1e-2 and dk_err < 1e-2
    print("PASS" if passed else "FAIL", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=262144, help="sequence length (default 262144)")
    sys.exit(main(ap.parse_args().n))
