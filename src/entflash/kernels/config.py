"""Block sizes and launch settings.

The tile map (per-tile score maxima) has one entry per (BLOCK_M query rows,
BLOCK_N keys) tile; every pass uses the same BLOCK_M/BLOCK_N so that the map
means the same tile everywhere.

Under TRITON_INTERPRET=1 (CPU CI) small blocks make tests at N ~ 65 cross
several tiles, so the skipping logic is exercised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# Alpha kinds (constexpr KIND in the kernels)
KIND_SOFTMAX = 0  # α = 1: p = exp(z - lse)
KIND_SPARSEMAX = 1  # α = 2: p = [z - τ]_+
KIND_ENTMAX15 = 2  # α = 1.5: p = [z/2 - τ]_+^2
KIND_GENERAL = 3  # any α (runtime, per head), incl. α = 1 heads of a per-head tensor


def sweep_margin(kind: int) -> float:
    """W of the τ sweeps after sweep 0 (threshold.tau_step): they also visit the tiles up to W below τ, so that
    a closed-form root up to W below the iterate can be verified over every score (α = 1.5 / 2; 0 otherwise)."""
    return 1e-3 if kind in (KIND_SPARSEMAX, KIND_ENTMAX15) else 0.0


# Tests set POISON so that every output buffer starts as NaN: an element a
# kernel forgot to write then fails the comparison instead of passing by luck.
POISON = os.environ.get("ENTFLASH_POISON") == "1"

KCHUNK = 256  # tile-map entries examined per step when building a program's tile list

# Per-kernel register cap (ptxas .maxnreg) by kernel name, e.g. {"tau": 128}; empty: ptxas decides. An
# experiment switch (benchmarks/stage_times.py maxnreg): two 8-warp programs per SM need <= 128 registers.
MAXNREG: dict = {}

# The τ pass as one launch per sweep (threshold.tau_kernel, STATE) instead of one launch with a loop over
# sweeps: "auto" splits when a launch has at least SPLIT_MIN_TILES causal-agnostic tiles (B·H·n_qblk·n_kblk)
# so that the extra launches (SPLIT_SWEEPS + 1; blocks with nothing left only rewrite their results) cost
# nothing next to the sweeps; "always" / "never" for tests and measurements. α = 1 (softmax, one sweep) never splits.
TAU_SPLIT = "auto"
SPLIT_MIN_TILES = 1 << 16
# launches with one sweep each; a last launch loops over the remaining sweeps for the few rows left
# (run 16, D64 N16k: after 4 sweeps 36 of 524288 rows were unfinished on random inputs, 1382 on clustered)
SPLIT_SWEEPS = 5

# Split τ pass: from this sweep on, the rows still unfinished are gathered per (batch, head) and swept in tiles
# of gathered rows (stragglers.py) instead of whole query blocks; None: every sweep by blocks. Run 27 (D64 N16k
# random): the third launch swept 71% of the blocks for 1.1% of the rows (1.6 ms of the τ pass's 7.0).
TAU_GATHER_FROM = 2
GATHER_CHUNK = 1024  # rows examined per step when listing a head's unfinished rows (gather_rows_kernel)
GATHER_KC = 32  # key tiles judged per step when listing a gathered tile's candidate tiles (128 rows each)

# dq in one sweep over its tiles instead of two (backward.dq_kernel ONE_SWEEP: δ̂ = dO·o from the forward's
# output, a second accumulator Σ u k, dq corrected once δ is known). Measured (run 29, H200 bf16 N16k causal,
# results/2026-11-29-h200-run29): dq D64 random 5.56 -> 4.51 ms, D64 clustered 0.53 -> 0.47, D128 clustered
# 0.88 -> 0.85, each at the default dq register cap (128 at D64: 96 bytes of spills offline, still the
# fastest; uncapped 6.35 and cap 168 5.84 on random). The two-sweep path stays for stage_times.py dqone.
DQ_ONE_SWEEP = True


def dq_one_sweep(need_dalpha: bool) -> bool:
    """Whether the dq kernel runs in one sweep: DQ_ONE_SWEEP, except for a per-head α's gradient, whose sums need
    δ, Σp and Σu before the second sweep (backward.dq_kernel)."""
    return bool(DQ_ONE_SWEEP) and not need_dalpha


def dq_maxnreg(launch, need_dalpha: bool):
    """The dq kernel's register cap: the launch config's, except for a per-head α's gradient, whose extra sums
    spill under it (856 bytes at D64 in session 9) and fit uncapped (175 registers, no spill; NOTES session 10)."""
    return None if need_dalpha else launch.dq_maxnreg

MAX_ITERS_EXACT = 16  # τ passes for α = 1.5 / 2 (Newton + verified closed form; usually 3-6)
MAX_ITERS_GENERAL = 24  # τ passes for general α (safeguarded Halley; usually 3-6)


@dataclass(frozen=True)
class Launch:
    BLOCK_M: int
    BLOCK_N: int
    num_warps: int
    num_stages: int
    # The tile map keeps one maximum per ROW_GROUP query rows (not per
    # BLOCK_M): query blocks often mix rows that attend to different places
    # (run 3: 128-row tiles admitted 18.7% of the tiles at D = 64 on clustered
    # inputs whose 64-row blocks hold 3% nonzero tiles). 16 rows is the rows
    # one warp owns in a 128-row, 8-warp tile, so the group maximum is a
    # reduction inside the warp.
    ROW_GROUP: int = 16
    # ptxas register cap for the one-sweep τ launches of a split pass: <= 128 registers lets two 8-warp
    # programs share an SM (run 14: a sweep 5.6 -> 3.7 ms on random D64 N16k); None: no cap
    split_maxnreg: Optional[int] = None
    # the same for the dq kernel (run 16, D64: 178 -> 128 registers with 40 bytes of spills, backward on
    # random inputs 16.9 -> 15.4 ms, clustered 1.65 -> 1.49 ms; 168 since run 60's whole tiles)
    dq_maxnreg: Optional[int] = None
    # the same for pass 1 (threshold.rowmax_kernel): at D64 ptxas takes 83 registers for the top-4 tile maxima
    # (3 programs per SM, pass 1 1.59 -> 2.12 ms on the H200, run 21); capped at 64 it needs 60, no spills.
    # D128: 64 KB of shared memory allow 3 programs per SM, which 93 registers (the 16-score lists, session 6)
    # cut to 2 (pass 1 2.28 -> 2.73 ms, run 25); capped at 80 it takes 64, no spills
    rowmax_maxnreg: Optional[int] = None
    # the same for the output kernel (sm_90 offline at D128: 167 registers, one 8-warp program per SM; 128
    # with 24 bytes of spills allow two within its 96 KB of shared memory; run 27: 0.42 -> 0.34 ms, the D128
    # default)
    output_maxnreg: Optional[int] = None
    # per-kernel software-pipeline depth (None: num_stages), experiment knobs measured by
    # benchmarks/stage_times.py occupancy: pass 1, the split τ pass's one-sweep launches, dq. At num_stages 2
    # pass 1 and the sweeps load the next K tile at the end of the loop body and wait for it at the top
    # (SASS: DEPBAR.LE SB0, 0x0); at 3 one load stays in flight (0x1) at the same registers. dq at D128 holds
    # 128 KB of shared memory at 2 stages (one program per SM), 96 KB at 1.
    rowmax_stages: Optional[int] = None
    split_stages: Optional[int] = None
    dq_stages: Optional[int] = None
    # the same for the output pass and the dk/dv kernel (stage_times.py pipes, session 13)
    output_stages: Optional[int] = None
    dkdv_stages: Optional[int] = None
    # dk/dv programs: key tiles per program and query rows per chunk (backward.dkdv_kernel)
    dkdv_kpp: int = 1
    dkdv_qc: int = 0  # 0: BLOCK_M
    dkdv_warps: int = 0  # 0: num_warps
    # dq programs per tile-map block (each owns BLOCK_M // dq_split rows and its own row groups' tile list) and
    # their warps (0: num_warps // dq_split): the dk/dv kernel ran 9-22% faster as one-warpgroup programs (run 52)
    dq_split: int = 1
    dq_warps: int = 0
    # the one-sweep dq over whole BLOCK_N-key tiles instead of two halves (backward.dq_kernel FULL_TILES): the
    # halves keep the 8-warp program's registers down, but make the score MMAs N = 32 wide
    dq_full_tiles: bool = False
    # the same split for pass 1 (threshold.rowmax_kernel) and the output pass (forward.output_kernel), each
    # program with num_warps // split warps
    rowmax_split: int = 1
    output_split: int = 1
    # and for every τ launch by blocks (fused, one-sweep and final; not the gathered stragglers' sweeps)
    tau_split: int = 1
    # pass 1's lower bound of τ: the bound_depth largest per-tile maxima of each of bound_subsets column subsets
    # per row (threshold.rowmax_kernel NSUB / DEPTH; 4 / 4: 16 scores). Richer sets let sweep 0 finish more rows
    # (benchmarks/tau_sweeps_sim.py topk) at the price of pass-1 registers
    bound_subsets: int = 4
    bound_depth: int = 4
    # the dk/dv kernel's scores relative to the row maxima, (x - m) - (τ - m), instead of x - τ with τ in score
    # units (backward.py): exact where |τ| is large (τ in score units is off by up to half an ulp of |τ|: dv off
    # by 8e-4 at scores ~8000), at one more per-row vector and one FADD per score: dk/dv +5% on clustered,
    # +12% on random inputs (run 69). On for float32 inputs, whose tolerance (the float32 reference's error)
    # sees it; bfloat16 / float16 keep τ in score units, whose error there stays below their own rounding
    dkdv_relative: bool = False

    def pipeline_stages(self, kernel: str) -> int:
        """num_stages of a launch: the kernel's own knob ("rowmax", "split" for the split τ pass's one-sweep
        launches, "output", "dq", "dkdv") when set, else num_stages."""
        own = {"rowmax": self.rowmax_stages, "split": self.split_stages, "output": self.output_stages,
               "dq": self.dq_stages, "dkdv": self.dkdv_stages}.get(kernel)
        return own or self.num_stages

    def split(self, kernel: str) -> int:
        """Programs per tile-map block of a launch ("rowmax", "tau" and "split" (the τ launches by blocks),
        "output", "dq"; 1 for the others)."""
        return {"rowmax": self.rowmax_split, "tau": self.tau_split, "split": self.tau_split,
                "output": self.output_split, "dq": self.dq_split}.get(kernel, 1)

    def kernel_warps(self, kernel: str) -> int:
        """num_warps of a launch: the kernel's own knob ("dkdv": dkdv_warps, "dq": dq_warps) when set, else
        num_warps // split(kernel)."""
        own = {"dkdv": self.dkdv_warps, "dq": self.dq_warps}.get(kernel)
        return own or max(1, self.num_warps // self.split(kernel))

    @property
    def n_groups(self) -> int:
        return self.BLOCK_M // self.ROW_GROUP


def launch_config(head_dim: int, dtype: torch.dtype) -> Launch:
    if interpreting():
        # tau_split=2, output_split=2, dq_split=2 and dq_full_tiles as on the GPU at D <= 64 (each split
        # program owns one 8-row group), so that CPU tests run the default path
        return Launch(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1, ROW_GROUP=8, dkdv_kpp=2, dkdv_qc=8,
                      output_split=2, dq_split=2, tau_split=2, dq_full_tiles=True,
                      dkdv_relative=dtype == torch.float32)
    if dtype == torch.float32 or head_dim > 128:
        return Launch(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2, dkdv_relative=dtype == torch.float32)
    # 8 warps also at D = 64: run 2 measured D = 128 (8 warps) faster than D = 64 (4 warps), the
    # τ sweeps keep many per-row vectors live and 4 warps spill
    return Launch(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2, split_maxnreg=128,
                  # run 60 (stage_times.py dqfull): the split dq over whole 64-key tiles at D64 under a 168 cap
                  # (three programs per SM; 56 bytes of stack offline) against halves at 128, dq ms: random N4k
                  # 1.28 / 1.31 -> 1.24, N16k 4.75 / 4.87 -> 4.52, clustered N16k 0.33 -> 0.32 (whole tiles at
                  # the 128 cap: 312 bytes of stack, 1.9x slower; uncapped, 254 registers: +6..+13%); D128
                  # (uncapped) random N4k 2.38 / 2.42 -> 2.30, N16k 8.55 / 9.03 -> 8.30, clustered equal
                  dq_full_tiles=True, dq_maxnreg=168 if head_dim <= 64 else None,
                  rowmax_maxnreg=64 if head_dim <= 64 else 80,
                  # run 27 (stage_times.py occupancy): pass 1 at 3 stages, D64 1.61 -> 1.56 ms (D128 would need
                  # 96 KB of shared memory); the output kernel capped at 128 registers at D128, clustered 0.42 ->
                  # 0.34 ms, random 5.6 -> 4.1. Not taken: split τ sweeps at 3 stages (noise), dq at 1 stage (slower)
                  rowmax_stages=3 if head_dim <= 64 else None, output_maxnreg=128 if head_dim > 64 else None,
                  # dk/dv over 128 keys in 32-row query chunks (H200, session 5; dk/dv ms before -> after):
                  # D64 random 9.82 -> 7.86, clustered 0.91 -> 0.84; D128 clustered 1.01 -> 1.10 (one key tile
                  # per program of the new kernel: 1.55 at 64-row chunks, 1.68 at 128), D128 random 11.4.
                  # With the flat, prefetched chunk loop (run 31) 64-row chunks at D <= 64: random 7.26 -> 5.78,
                  # clustered 0.83 -> 0.68 (248 registers, no spills); D128 keeps 32 (64 spills 176 bytes)
                  # run 52: as 4-warp programs over 64 keys in 32-row chunks (two programs per SM, no barrier
                  # between warpgroups; D64 235 registers): D64 random N4k 1.61 -> 1.44 ms, N16k 5.73 -> 5.23,
                  # clustered 0.67 -> 0.52; D128 random N16k 10.13 -> 8.41 (208 bytes of stack)
                  dkdv_kpp=1, dkdv_qc=32, dkdv_warps=4,
                  # run 54 (stage_times.py dqsplit): dq as two 4-warp programs per 128-row block, each over its
                  # own 64 rows' tile list (dq ms, split 1 -> 2): D64 random N4k 1.36 -> 1.28, N16k 4.63 -> 4.85
                  # (+5%: each K/V tile is loaded for 64 rows instead of 128), clustered N16k 0.51 -> 0.33; D128
                  # random N4k 2.65 -> 2.37, N16k 9.27 -> 8.64, clustered 0.85 -> 0.57. D64 keeps the 128 cap
                  # (uncapped, 173 registers: slower in every case)
                  dq_split=2,
                  # run 57 (stage_times.py fwdsplit, split 1 -> 2): the output pass at D64 clustered N16k 0.295 ->
                  # 0.201 ms, random N16k 2.61 -> 2.74, N4k 0.77 -> 0.78; at D128 slower (random N16k 4.18 -> 5.80,
                  # clustered 0.247 -> 0.256: two 4-warp programs of 82 KB per SM hold half the warps). Pass 1
                  # slower at both (D64 1.55 -> 1.66, D128 2.51 -> 2.60): kept at 1
                  output_split=2 if head_dim <= 64 else 1,
                  # run 59 (stage_times.py tausplit, split 1 -> 2, τ pass ms): clustered D64 N16k 1.15 -> 0.92, N4k
                  # 0.75 -> 0.57, D128 N16k 0.95-1.11 -> 0.82; random D64 N4k 1.70 -> 1.64, N16k 5.53 -> 5.54,
                  # D128 N4k 2.14 -> 2.05, N16k 7.05 -> 7.20 (noise: the two split-1 readings differ by 2%)
                  tau_split=2)


def block_d(head_dim: int) -> int:
    d = 16
    while d < head_dim:
        d *= 2
    return d
