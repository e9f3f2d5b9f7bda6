"""Kernel launch options: one typed, immutable record, chosen per (GPU architecture, dtype, head dim).

`KernelOptions` holds every setting a launch depends on (tile sizes, warps,
pipeline depth, register caps, how a pass splits into programs, iteration
limits). `select(arch, dtype, head_dim)` picks it from the table below; the
launcher (launch.py) passes its fields to every kernel as arguments, so no
module-level switch changes what a kernel does. A caller may pass its own
record (`entmax_attention(..., kernel_options=...)`), which is how the tests
reach the non-default paths and how a new GPU can be tuned without editing
the library.

Every tuned value below was measured on Hopper (H100/H200); the reason and the
measured effect of each are in docs/performance.md ("Levers tried"). Other
architectures get a conservative record that compiles and fits their shared
memory (benchmarks/kernel_check.py compiles every production variant for
sm_80, sm_89, sm_90 and sm_100 without a GPU); they have not been tuned.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

# α kinds (constexpr KIND of the kernels)
KIND_SOFTMAX = 0  # α = 1: p = 2^(x - τ), x in log2 units
KIND_SPARSEMAX = 1  # α = 2: p = [x - τ]_+
KIND_ENTMAX15 = 2  # α = 1.5: p = [x - τ]_+^2
KIND_GENERAL = 3  # any α, read per head at run time (α = 1 heads of a per-head tensor included)

# the oldest architecture the kernels support (bf16 MMA, cp.async)
MIN_ARCH = (8, 0)

# shared memory one program may use, by compute capability (bytes; CUDA's per-block opt-in maximum)
SHARED_LIMIT = {(8, 0): 166912, (8, 6): 101376, (8, 7): 166912, (8, 9): 101376, (9, 0): 232448,
                (10, 0): 232448, (12, 0): 101376}


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class KernelOptions:
    """Launch options of one attention call (every field is passed to the kernels by launch.py).

    Tiles: the tile map (per-tile score maxima) has one entry per (row_group query rows, block_n keys); every
    pass uses the same block_m / block_n so that an entry means the same tile everywhere. A "split" of s runs
    each block_m-row tile-map block as s programs of block_m / s rows and num_warps / s warps.
    """

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    # query rows per tile-map entry: 16 = the rows one warp owns in a 128-row, 8-warp tile, so the group maximum
    # is a reduction inside the warp; 128-row entries admitted far more tiles on clustered inputs
    row_group: int = 16
    # tile-map entries judged per step when a program builds its tile list
    kchunk: int = 256
    # pass 1 (row maxima, tile map, lower bound of τ)
    pass1_stages: Optional[int] = None  # None: num_stages
    pass1_maxnreg: Optional[int] = None  # ptxas register cap; None: ptxas decides
    # τ pass: programs per tile-map block, and the register cap of its one-sweep launches
    tau_split: int = 1
    tau_sweep_maxnreg: Optional[int] = None
    # the τ pass runs one launch per sweep (per-row state in memory) when a call has at least this many tiles
    # (B·H·query blocks·key blocks), else one launch that loops over sweeps; 0: always split
    tau_split_min_tiles: int = 1 << 16
    # in a split τ pass, the rows still unfinished after this many sweeps are gathered per (batch, head) and
    # swept in tiles of gathered rows (gather.py)
    tau_gather_from: int = 2
    # the sweeps from tau_gather_from up to (not including) tau_gather_until run by blocks, as before, for each
    # (batch, head) whose unfinished rows exceed 1 / tau_gather_share of its rows, and skip the others (whose
    # rows wait for the gathered sweeps): a head with many rows left pays less for one more block sweep than
    # for gathered tiles that each visit the union of 128 scattered rows' tiles (docs/performance.md)
    tau_gather_until: int = 2
    tau_gather_share: int = 8
    gather_chunk: int = 1024  # rows examined per step when listing a head's unfinished rows
    gather_kc: int = 32  # key tiles judged per step when listing a gathered tile's candidate tiles
    # general α: the τ sweeps take log2 from the hardware's lg2.approx (heads with α >= 1.1); False: tl.log2
    fast_log2: bool = True
    max_iters_exact: int = 16  # τ sweeps at most for α = 1.5 / 2 (usually 2-3)
    max_iters_general: int = 24  # τ sweeps at most for other α (usually 3-6)
    # output pass
    output_split: int = 1
    output_maxnreg: Optional[int] = None
    # dq: programs per block, whole key tiles per step (False: two halves), register cap (not applied when a
    # per-head α needs its gradient: its extra sums spill under it)
    dq_split: int = 1
    dq_full_tiles: bool = False
    dq_maxnreg: Optional[int] = None
    # a per-head α's gradient: heads with α at or above this value (and softmax heads) take dq and dα in the one
    # sweep of the float-α backward; heads nearer 1 sweep twice, since the one-sweep form of dα cancels there
    # (dq.py; above 2: every non-softmax head sweeps twice)
    dalpha_one_sweep_alpha: float = 1.4
    # dk/dv: query rows per chunk (0: block_m), warps per program (0: num_warps), and scores relative to the row
    # maxima ((x - m) - (τ - m), exact where |τ| is large; else x - τ with τ in score units, one FADD per score
    # less)
    dkdv_qc: int = 0
    dkdv_warps: int = 0
    dkdv_relative: bool = False
    # the decode path (decode.py): forward-only calls with at most decode_rows query rows per KV head (G·Nq) run
    # it instead of the query-block pipeline (0: never); its score programs take decode_span key tiles of
    # decode_block_n keys; the τ sweeps judge decode_chunks chunks per step and stop after decode_max_iters
    decode_rows: int = 16
    decode_block_n: int = 64
    decode_span: int = 16
    decode_chunks: int = 16
    decode_max_iters: int = 64
    # fill every output buffer with NaN (-1 for integers) before the kernels run, so that an element a kernel
    # forgot to write fails a comparison instead of passing by luck (tests)
    poison: bool = False

    def __post_init__(self):
        def power_of_two(name, v, lo=1):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or v & (v - 1):
                raise ValueError(f"KernelOptions.{name} must be a power of two >= {lo}, got {v!r}")

        for name in ("block_m", "block_n", "num_warps", "row_group", "kchunk", "tau_split", "output_split",
                     "dq_split", "gather_chunk", "gather_kc", "decode_block_n", "decode_span", "decode_chunks"):
            power_of_two(name, getattr(self, name))
        if self.block_n < 16 or self.block_m < 16:
            raise ValueError(f"KernelOptions.block_m and block_n must be >= 16, got {self.block_m}, {self.block_n}")
        for name in ("tau_split", "output_split", "dq_split"):
            s = getattr(self, name)
            if self.block_m // s < self.row_group:
                raise ValueError(f"KernelOptions.{name} = {s} leaves block_m // {s} = {self.block_m // s} rows per "
                                 f"program, fewer than row_group = {self.row_group}")
        if self.dkdv_qc and (self.dkdv_qc & (self.dkdv_qc - 1) or self.block_m % self.dkdv_qc):
            raise ValueError(f"KernelOptions.dkdv_qc must be 0 or a power of two dividing block_m, got {self.dkdv_qc}")
        if self.decode_block_n < 16:
            raise ValueError(f"KernelOptions.decode_block_n must be >= 16, got {self.decode_block_n}")
        if isinstance(self.decode_rows, bool) or not isinstance(self.decode_rows, int) or not 0 <= self.decode_rows <= 64:
            raise ValueError(f"KernelOptions.decode_rows must be an int in [0, 64], got {self.decode_rows!r}")
        if self.decode_max_iters < 1:
            raise ValueError(f"KernelOptions.decode_max_iters must be >= 1, got {self.decode_max_iters}")
        if self.tau_gather_from < 1:
            raise ValueError(f"KernelOptions.tau_gather_from must be >= 1, got {self.tau_gather_from}")
        a = self.dalpha_one_sweep_alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not a > 1.0:
            raise ValueError(f"KernelOptions.dalpha_one_sweep_alpha must be a number > 1, got {a!r}")
        if self.tau_gather_share < 1:
            raise ValueError(f"KernelOptions.tau_gather_share must be >= 1, got {self.tau_gather_share}")

    def replace(self, **changes) -> "KernelOptions":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def encode(self) -> str:
        """A string that decode() turns back into this record (how the options cross the custom ops)."""
        return ";".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def decode(text: str) -> "KernelOptions":
        kw = {}
        for item in text.split(";"):
            name, _, val = item.partition("=")
            if val == "None":
                kw[name] = None
            elif val in ("True", "False"):
                kw[name] = val == "True"
            else:
                kw[name] = int(val) if val.lstrip("-").isdigit() else float(val)
        return KernelOptions(**kw)

    # per-kernel views used by the launcher

    @property
    def n_groups(self) -> int:
        return self.block_m // self.row_group

    def dkdv_rows(self) -> int:
        return self.dkdv_qc or self.block_m

    def dalpha_inv_max(self) -> float:
        """1 / (α - 1) of the lowest α whose heads take the one-sweep dα (dalpha_one_sweep_alpha)."""
        return 1.0 / (self.dalpha_one_sweep_alpha - 1.0)

    def max_iters(self, kind: int) -> int:
        return self.max_iters_general if kind == KIND_GENERAL else self.max_iters_exact


def sweep_margin(kind: int) -> float:
    """W of the τ sweeps after sweep 0 (tau.tau_step): they also visit the tiles up to W below τ, so that a
    closed-form root up to W below the iterate can be verified over every score (α = 1.5 / 2, and a per-head α,
    whose heads of exactly 1.5 or 2 take those kinds' steps; the general step needs none, and extra tiles visited
    change no sum's value)."""
    return 1e-3 if kind in (KIND_SPARSEMAX, KIND_ENTMAX15, KIND_GENERAL) else 0.0


def block_d(head_dim: int) -> int:
    """The head dim rounded up to a power of two >= 16 (the kernels' BLOCK_D)."""
    d = 16
    while d < head_dim:
        d *= 2
    return d


def _hopper(dtype: torch.dtype, head_dim: int) -> KernelOptions:
    """sm_90 (H100, H200): the measured configuration (docs/performance.md, "Levers tried")."""
    if dtype == torch.float32 or head_dim > 128:
        return _portable(dtype, head_dim, (9, 0))
    small = head_dim <= 64
    return KernelOptions(
        # 8 warps at every head dim: the τ sweeps keep many per-row vectors live and 4 warps spilled
        block_m=128, block_n=64, num_warps=8, num_stages=2,
        # pass 1 at 3 stages (D64) and capped at 64 / 80 registers: four / three 8-warp programs per SM
        pass1_stages=3 if small else None, pass1_maxnreg=64 if small else 80,
        # two 4-warp programs per block, one-sweep launches at <= 128 registers (two programs per SM)
        tau_split=2, tau_sweep_maxnreg=128,
        # the third sweep by blocks for heads with more than 1/8 of their rows unfinished, then gathering
        tau_gather_until=3,
        # output: split at D64; at D128 one 8-warp program capped at 128 registers (two per SM)
        output_split=2 if small else 1, output_maxnreg=None if small else 128,
        # dq: two 4-warp programs per block over whole 64-key tiles, capped at 168 registers at D64
        dq_split=2, dq_full_tiles=True, dq_maxnreg=168 if small else None,
        # dk/dv: 4-warp programs over 64 keys in 32-row query chunks
        dkdv_qc=32, dkdv_warps=4,
    )


def _portable(dtype: torch.dtype, head_dim: int, arch: Tuple[int, int]) -> KernelOptions:
    """The conservative record: 64x32 tiles, 4 warps, no register caps, no splits. Used for float32 and head dims
    above 128 on sm_90 (measured there) and for every architecture without a tuned table. On architectures with
    99 KB of shared memory per program (sm_86, sm_89, sm_120) the kernels at head dims above 64 take one pipeline
    stage fewer, and float32 dk/dv smaller query chunks, so that they fit (benchmarks/kernel_check.py)."""
    small_shared = SHARED_LIMIT.get(tuple(arch), 0) < 160 * 1024
    wide = small_shared and head_dim > 64
    # float32: dk/dv relative to the row maxima, whose error the float32 tolerance sees (docs/design.md); dk/dv in
    # 32-row query chunks where 64-row ones do not fit (float32 above D = 64 and D = 256: 112 KB at one stage)
    return KernelOptions(block_m=64, block_n=32, num_warps=4, num_stages=1 if wide else 2, dkdv_qc=32 if wide else 0,
                         dkdv_relative=dtype == torch.float32)


def interpreter_options(dtype: torch.dtype) -> KernelOptions:
    """Under TRITON_INTERPRET=1 (CPU tests): 16x16 tiles, so that inputs of ~65 rows cross several tiles and the
    skipping logic runs, with the splits, whole-tile dq and the float32 dk/dv form of the GPU records, so that the
    CPU tests exercise the default paths (one 8-row group per split program)."""
    return KernelOptions(block_m=16, block_n=16, num_warps=1, num_stages=1, row_group=8, dkdv_qc=8,
                         tau_split=2, output_split=2, dq_split=2, dq_full_tiles=True, fast_log2=False,
                         dkdv_relative=dtype == torch.float32, decode_block_n=16, decode_span=2, decode_chunks=4)


def select(arch: Tuple[int, int], dtype: torch.dtype, head_dim: int) -> KernelOptions:
    """The launch options for compute capability `arch` (e.g. (9, 0)), the inputs' dtype and head dim."""
    if tuple(arch) < MIN_ARCH:
        raise RuntimeError(
            f"entflash's Triton kernels need a GPU of compute capability {MIN_ARCH[0]}.{MIN_ARCH[1]} (Ampere) or "
            f"newer, but this one is sm_{arch[0]}{arch[1]}; use backend='torch' on this GPU"
        )
    if tuple(arch) == (9, 0):
        return _hopper(dtype, head_dim)
    return _portable(dtype, head_dim, tuple(arch))


def for_device(device: torch.device, dtype: torch.dtype, head_dim: int) -> KernelOptions:
    """select() for the GPU that holds the inputs (interpreter_options() under TRITON_INTERPRET=1)."""
    if interpreting():
        return interpreter_options(dtype)
    return select(_capability(device.index if device.index is not None else torch.cuda.current_device()), dtype,
                  head_dim)


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> Tuple[int, int]:
    return torch.cuda.get_device_capability(index)
