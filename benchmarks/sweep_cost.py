"""What one dense score sweep costs, piece by piece (a micro-benchmark for the τ-pass design).

    PYTHONPATH=src python benchmarks/sweep_cost.py          # H200: D64 bf16, N16k causal, B2 H16, 128x64 tiles

A stand-alone kernel recomputes every causal score tile x = q·kᵀ (as pass 1 and every τ sweep do) and
then does, per tile, one of:
  MODE 0: one elementwise max into a register tile (reduced once at the end): load + dot + ~1 op/score;
  MODE 1: R per-tile row reductions (R = 1..4: Σ y₊, Σ y₊², count, min y₊, with y = x - t_row), the
          shape of a τ sweep;
  MODE 2: R elementwise accumulations into register tiles, reduced once after the loop;
  MODE 3: as MODE 2, but each tile is first folded in half along the keys (tl.split of adjacent column
          pairs, which one thread holds together) so an accumulator tile costs half the registers; R = 4
          adds an elementwise min tile;
  MODE 4: MODE 3 with R = 4 and fewer operations per score: no scale multiply (the threshold is
          divided by the scale once per row instead; needs scale > 0) and max(y, 0) for the clipped value;
  GROUP:  MODE 1, R = 1 plus pass 1's per-16-row group maximum stored to a tile map.
The differences between rows are the price of a per-tile reduction and of an elementwise accumulation,
which NOTES.md (run 8) estimated at ~0.27 ms per reduction per dense sweep without measuring it.
Not part of the library; the kernel below exists only to be timed.
"""
import json
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def sweep_cost_kernel(Q, K, TH, OUT, MAP, N, n_kblk, scale, D: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, MODE: tl.constexpr, R: tl.constexpr, GROUP: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    base = pid_bh.to(tl.int64) * N * D
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :])
    th = tl.load(TH + pid_bh.to(tl.int64) * N + offs_m)
    a0 = tl.zeros([BLOCK_M], tl.float32)
    a1 = tl.zeros([BLOCK_M], tl.float32)
    a2 = tl.zeros([BLOCK_M], tl.float32)
    a3 = tl.full([BLOCK_M], float("inf"), tl.float32)
    t0 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    t1 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    t2 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    h0 = tl.zeros([BLOCK_M, BLOCK_N // 2], tl.float32)
    h1 = tl.zeros([BLOCK_M, BLOCK_N // 2], tl.float32)
    h2 = tl.zeros([BLOCK_M, BLOCK_N // 2], tl.float32)
    h3 = tl.full([BLOCK_M, BLOCK_N // 2], float("inf"), tl.float32)
    for start_n in range(0, (pid_m + 1) * BLOCK_M, BLOCK_N):
        offs_n = start_n + offs_n0
        kT = tl.load(K + base + offs_n[None, :] * D + offs_d[:, None])
        if MODE == 4:
            x = tl.dot(q, kT)  # raw units: y = (q·k - t/scale), sums rescaled after the loop
            y = x - (th / scale)[:, None]
        else:
            x = tl.dot(q, kT) * scale
            y = x - th[:, None]
        ins = y > 0
        if MODE == 0:
            t0 = tl.maximum(t0, x)
        elif MODE == 1:
            a0 += tl.sum(tl.where(ins, y, 0.0), 1)
            if R >= 2:
                a1 += tl.sum(tl.where(ins, y * y, 0.0), 1)
            if R >= 3:
                a2 += tl.sum(ins.to(tl.float32), 1)
            if R >= 4:
                a3 = tl.minimum(a3, tl.min(tl.where(ins, y, float("inf")), 1))
            if GROUP:
                gm = tl.max(tl.reshape(tl.max(x, 1), (BLOCK_M // 16, 16)), 1)
                tl.store(MAP + (pid_bh.to(tl.int64) * (N // 16) + pid_m * (BLOCK_M // 16)
                                + tl.arange(0, BLOCK_M // 16)) * n_kblk + start_n // BLOCK_N, gm)
        elif MODE == 4:
            yz = tl.maximum(y, 0.0)
            ya, yb = tl.split(tl.reshape(yz, (BLOCK_M, BLOCK_N // 2, 2)))
            h0 += ya + yb
            h1 += ya * ya + yb * yb
            ia, ib = tl.split(tl.reshape(ins.to(tl.float32), (BLOCK_M, BLOCK_N // 2, 2)))
            h2 += ia + ib
            ma, mb = tl.split(tl.reshape(tl.where(ins, y, float("inf")), (BLOCK_M, BLOCK_N // 2, 2)))
            h3 = tl.minimum(h3, tl.minimum(ma, mb))
        elif MODE == 3:
            yz = tl.where(ins, y, 0.0)
            ya, yb = tl.split(tl.reshape(yz, (BLOCK_M, BLOCK_N // 2, 2)))
            h0 += ya + yb
            if R >= 2:
                h1 += ya * ya + yb * yb
            if R >= 3:
                ia, ib = tl.split(tl.reshape(ins.to(tl.float32), (BLOCK_M, BLOCK_N // 2, 2)))
                h2 += ia + ib
            if R >= 4:
                ma, mb = tl.split(tl.reshape(tl.where(ins, y, float("inf")), (BLOCK_M, BLOCK_N // 2, 2)))
                h3 = tl.minimum(h3, tl.minimum(ma, mb))
        else:
            t0 += tl.where(ins, y, 0.0)
            if R >= 2:
                t1 += tl.where(ins, y * y, 0.0)
            if R >= 3:
                t2 += ins.to(tl.float32)
    if MODE == 0:
        a0 = tl.max(t0, 1)
    elif MODE == 3:
        a0 = tl.sum(h0, 1)
        a1 = tl.sum(h1, 1)
        a2 = tl.sum(h2, 1)
        a3 = tl.min(h3, 1)
    elif MODE == 4:
        a0 = tl.sum(h0, 1) * scale
        a1 = tl.sum(h1, 1) * (scale * scale)
        a2 = tl.sum(h2, 1)
        a3 = tl.min(h3, 1) * scale
    elif MODE == 2:
        a0 = tl.sum(t0, 1)
        a1 = tl.sum(t1, 1)
        a2 = tl.sum(t2, 1)
    res = a0 + a1 + a2 + tl.where(a3 < float("inf"), a3, 0.0)
    tl.store(OUT + pid_bh.to(tl.int64) * N + offs_m, res)


VARIANTS = [(0, 0, False), (1, 1, False), (1, 2, False), (1, 3, False), (1, 4, False), (2, 1, False),
            (2, 2, False), (2, 3, False), (1, 1, True), (3, 1, False), (3, 2, False), (3, 3, False), (3, 4, False),
            (4, 4, False)]


def run(mode, r, group, q, k, th, BLOCK_M, BLOCK_N, num_warps, num_stages):
    BH, N, D = q.shape
    out = torch.empty(BH, N, device=q.device, dtype=torch.float32)
    n_kblk = N // BLOCK_N
    tmap = torch.empty(BH, N // 16, n_kblk, device=q.device, dtype=torch.float32) if group else out
    grid = (N // BLOCK_M, BH)

    def launch():
        sweep_cost_kernel[grid](q, k, th, out, tmap, N, n_kblk, D ** -0.5 * 0.5, D=D, BLOCK_M=BLOCK_M,
                                BLOCK_N=BLOCK_N, MODE=mode, R=r, GROUP=group, num_warps=num_warps,
                                num_stages=num_stages)
    return launch, out


def main():
    from triton.testing import do_bench

    torch.manual_seed(0)
    B, H, N, D = 2, 16, 16384, 64
    q = torch.randn(B * H, N, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B * H, N, D, device="cuda", dtype=torch.bfloat16)
    # a per-row threshold that keeps ~1% of the scores above it (the τ-sweep situation on random inputs)
    th = torch.full((B * H, N), 2.3 * 0.5, device="cuda")
    for mode, r, group in VARIANTS:
        launch, _ = run(mode, r, group, q, k, th, 128, 64, 8, 2)
        ms = do_bench(launch, warmup=10, rep=50, return_mode="median")
        row = dict(mode=mode, reductions=r, group_map=group, ms=round(ms, 3), D=D, N=N, B=B, H=H,
                   gpu=torch.cuda.get_device_name(), triton=triton.__version__)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
