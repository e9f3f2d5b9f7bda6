"""Per-stage forward times (pass 1, τ kernel, output pass) on the GPU, for the notes' profile.

The τ pass rewrites the tile map that pass 1 wrote, so stages are timed cumulatively
(pass 1; pass 1 + τ; all three) and reported as differences.
`stage_times.py bwd`: the backward's two kernels (dq with δ, then dk/dv) after one forward.
"""
import contextlib
import dataclasses
import sys

import torch
from triton.testing import do_bench

from entflash.bench.inputs import make_inputs
from entflash.kernels import api, config


@contextlib.contextmanager
def launch_fields(**fields):
    """config.launch_config with some config.Launch fields replaced (a measured variant), restored after."""
    base = config.launch_config
    config.launch_config = lambda d, dt: dataclasses.replace(base(d, dt), **fields)
    try:
        yield
    finally:
        config.launch_config = base


def forward_setup(D, inputs, causal=True, N=16384, B=2, H=16, alpha=1.5):
    """(q, k, v, bound _Geom, forward buffers) of the bench's inputs, α (1.5 unless given), the library's default
    scale."""
    q, k, v = make_inputs(inputs, B, H, N, D, causal)
    g = api._Geom(q, k, v, None, N, N).bind(None, alpha, None, None, None, causal, q.device)
    return q, k, v, g, api.forward_buffers(g, q, v, need_stats=False, split=api.split_tau(g, g.kind))


def stages(D, inputs, causal=True, N=16384, B=2, H=16, max_iters=None, alpha=1.5):
    q, k, v, g, bufs = forward_setup(D, inputs, causal, N, B, H, alpha)
    tmax, taumin = bufs[4], bufs[5]
    f1, f2, f3 = api.forward_stages(q, k, v, g, D ** -0.5, bufs, need_stats=False, max_iters=max_iters)
    f12 = lambda: (f1(), f2())  # noqa: E731  (the τ pass rewrites the map: it must follow pass 1)
    f123 = lambda: (f1(), f2(), f3())  # noqa: E731
    f123()
    NG = g.launch.n_groups
    hit = tmax.view(B * H, g.n_qblk, NG, g.n_kblk) > taumin.view(B * H, g.n_qblk, NG, 1)
    cand = hit.any(2).float().mean().item()  # visited (BLOCK_M, BLOCK_N) tiles
    t1, t12, t123 = (do_bench(f, warmup=10, rep=40, return_mode="median") for f in (f1, f12, f123))
    return [round(t1, 3), round(t12 - t1, 3), round(t123 - t12, 3)], round(cand, 4)


def bwd_stages(D, inputs, causal=True, N=16384, B=2, H=16, alpha=1.5):
    q, k, v, g, fb = forward_setup(D, inputs, causal, N, B, H, alpha)
    for f in api.forward_stages(q, k, v, g, D ** -0.5, fb, need_stats=False):
        f()
    m, tau, tmax, taumin = fb[1], fb[2], fb[4], fb[5]
    do = torch.randn_like(q)
    bb = api.backward_buffers(g, q, k, v, need_dalpha=False)
    b1, b2 = api.backward_stages(do, q, k, v, tau, m, tmax, taumin, g, D ** -0.5, bb, need_dalpha=False, out=fb[0])
    b12 = lambda: (b1(), b2())  # noqa: E731  (dk/dv reads the δ that dq writes)
    b12()
    t1, t12 = (do_bench(f, warmup=10, rep=40, return_mode="median") for f in (b1, b12))
    return round(t1, 3), round(t12 - t1, 3)


# the cases of the split-program comparisons (and bwdall): where the random backward trails AdaSplash-2's (N4k)
# and the clustered targets (N16k), at both head dims
SPLIT_CASES = [(64, 4096, 8, "random"), (64, 16384, 2, "random"), (64, 16384, 2, "clustered"),
               (128, 4096, 8, "random"), (128, 16384, 2, "random"), (128, 16384, 2, "clustered")]


def forward_split_times(cases, fields):
    """Forward stage times with the config.Launch split knobs `fields` at 1, 2 and 1 again (drift control)."""
    for D, N, B, inputs in cases:
        for split in (1, 2, 1):
            with launch_fields(**{f: split for f in fields}):
                t, cand = stages(D, inputs, N=N, B=B)
            print(f"D={D} N={N} B={B} {inputs} {'/'.join(fields)}={split}: pass1 {t[0]} ms, tau {t[1]} ms, "
                  f"out {t[2]} ms", flush=True)


def forward_variant_times(cases, variants_of):
    """Forward stage times per case under the variants variants_of(D) gives, (name, config.Launch fields,
    config.TAU_GATHER_FROM), the first read again at the end (drift control); TAU_GATHER_FROM restored after."""
    default_from = config.TAU_GATHER_FROM
    for D, N, B, inputs in cases:
        variants = variants_of(D)
        for name, fields, gather_from in variants + variants[:1]:
            config.TAU_GATHER_FROM = gather_from
            with launch_fields(**fields):
                t, cand = stages(D, inputs, N=N, B=B)
            print(f"D={D} N={N} B={B} {inputs} {name}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms", flush=True)
    config.TAU_GATHER_FROM = default_from


def backward_variant_times(cases, variants):
    """The backward's kernel times per case under each (name, config.Launch fields) of variants, in order."""
    for D, N, B, inputs in cases:
        for name, fields in variants:
            with launch_fields(**fields):
                t_dq, t_dkdv = bwd_stages(D, inputs, N=N, B=B)
            print(f"D={D} N={N} B={B} {inputs} {name}: dq {t_dq} ms, dkdv {t_dkdv} ms", flush=True)


if __name__ == "__main__":
    # `stage_times.py n 4096`: forward stages and backward kernels at another N (B = 32768 / N, the bench's
    # token count), D64 causal, both inputs: where a short-sequence case loses (run 33: N4k random f+b 1.21x
    # AdaSplash-2's)
    # `stage_times.py alpha 1.3`: forward stages and backward kernels at a general α (config.KIND_GENERAL: pow
    # through exp2/log2, Halley for τ), D64 N16k causal, both inputs (run 45: a per-head α's forward 9x the
    # α = 1.5 one on random inputs)
    if sys.argv[1:2] == ["alpha"]:
        a = float(sys.argv[2])
        for inputs in ("clustered", "random"):
            t, cand = stages(64, inputs, alpha=a)
            t_dq, t_dkdv = bwd_stages(64, inputs, alpha=a)
            print(f"D=64 alpha={a} {inputs}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, dq {t_dq} ms, "
                  f"dkdv {t_dkdv} ms, output-tile fraction {cand}", flush=True)
        sys.exit(0)
    if sys.argv[1:2] == ["n"]:
        N = int(sys.argv[2])
        B = max(1, 32768 // N)
        for inputs in ("clustered", "random"):
            t, cand = stages(64, inputs, N=N, B=B)
            t_dq, t_dkdv = bwd_stages(64, inputs, N=N, B=B)
            print(f"D=64 N={N} B={B} {inputs}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, dq {t_dq} ms, "
                  f"dkdv {t_dkdv} ms, output-tile fraction {cand}", flush=True)
        sys.exit(0)
    # `stage_times.py bwdall`: the backward's two kernels at the cases where the random backward trails
    # AdaSplash-2's (run 40 / run 49) and the clustered ones of the targets
    if sys.argv[1:2] == ["bwdall"]:
        for D, N, B, inputs in SPLIT_CASES:
            t_dq, t_dkdv = bwd_stages(D, inputs, N=N, B=B)
            print(f"D={D} N={N} B={B} {inputs}: dq {t_dq} ms, dkdv {t_dkdv} ms", flush=True)
        sys.exit(0)
    # `stage_times.py dkdvw`: the dk/dv kernel as 4-warp programs (two per SM, no barrier between warpgroups)
    # against the 8-warp default before run 52 (now (1, 32, 4)), by (key tiles per program, query rows per chunk,
    # warps); sm_90 offline: D64 (1, 64, 4) 251 registers, (1, 32, 4) 235, no spills (two programs per SM); D128
    # (1, 32, 4) 208 bytes of stack
    if sys.argv[1:2] == ["dkdvw"]:
        for D, N, B, inputs, variants in [
                (64, 4096, 8, "random", [(2, 64, 8), (1, 64, 4), (1, 32, 4)]),
                (64, 16384, 2, "random", [(2, 64, 8), (1, 64, 4), (1, 32, 4)]),
                (64, 16384, 2, "clustered", [(2, 64, 8), (1, 64, 4), (1, 32, 4)]),
                (128, 16384, 2, "random", [(2, 32, 8), (1, 32, 4)])]:
            for kpp, qc, w in variants:
                with launch_fields(dkdv_kpp=kpp, dkdv_qc=qc, dkdv_warps=w):
                    t_dq, t_dkdv = bwd_stages(D, inputs, N=N, B=B)
                print(f"D={D} N={N} B={B} {inputs} dkdv kpp={kpp} qc={qc} warps={w}: dkdv {t_dkdv} ms", flush=True)
        sys.exit(0)
    # `stage_times.py dqsplit`: dq as two 4-warp programs per tile-map block (config.Launch.dq_split, each with
    # its own row groups' tile list) against one 8-warp program; sm_90 offline at D64: 128 registers + 120 bytes
    # of stack at the 128 cap (today's 8-warp kernel: 112), 173 uncapped; D128 uncapped 255 + 88 (today 255 + 96)
    if sys.argv[1:2] == ["dqsplit"]:
        for D, N, B, inputs in SPLIT_CASES:
            variants = [(1, "default"), (2, 128), (2, None)] if D == 64 else [(1, "default"), (2, None)]
            for split, cap in variants:
                fields = dict(dq_split=split) if cap == "default" else dict(dq_split=split, dq_maxnreg=cap)
                with launch_fields(**fields):
                    t_dq, t_dkdv = bwd_stages(D, inputs, N=N, B=B)
                print(f"D={D} N={N} B={B} {inputs} dq_split={split} cap={cap}: dq {t_dq} ms, dkdv {t_dkdv} ms",
                      flush=True)
        sys.exit(0)
    # `stage_times.py dqfull`: the one-sweep dq over whole 64-key tiles (config.Launch.dq_full_tiles: score MMAs
    # N = 64 wide) against two 32-key halves, under register caps; sm_90 offline (split 2, 4 warps): D64 halves
    # 128 + 120 bytes of stack at the cap (173 uncapped), whole tiles 128 + 312 (254 uncapped); D128 255 + 88 ->
    # 255 + 32
    if sys.argv[1:2] == ["dqfull"]:
        for D, N, B, inputs in SPLIT_CASES:
            variants = [(False, 128), (True, 128), (True, 168), (True, None)] if D == 64 else [(False, None),
                                                                                              (True, None)]
            for full, cap in variants + variants[:1]:
                with launch_fields(dq_full_tiles=full, dq_maxnreg=cap):
                    t_dq, t_dkdv = bwd_stages(D, inputs, N=N, B=B)
                print(f"D={D} N={N} B={B} {inputs} dq_full_tiles={full} cap={cap}: dq {t_dq} ms, dkdv {t_dkdv} ms",
                      flush=True)
        sys.exit(0)
    # `stage_times.py pipes`: the output pass and the dk/dv kernel at 3 pipeline stages (config.Launch output_stages,
    # dkdv_stages; sm_90 offline: D64 output 127 registers / 56 KB (three programs per SM instead of four), dk/dv 252 /
    # 41 KB (still two); D128 dk/dv 82 KB), and the split τ pass gathering its unfinished rows from sweep 1 instead
    # of 2 (config.TAU_GATHER_FROM: after sweep 0 ~73% of the rows are unfinished on random inputs, run 25), each
    # against the default, which is read first and last
    if sys.argv[1:2] == ["pipes"]:
        default_from = config.TAU_GATHER_FROM
        for D, N, B, inputs in [(64, 4096, 8, "random"), (128, 4096, 8, "random"), (64, 16384, 2, "clustered"),
                                (64, 16384, 2, "random")]:
            pipes = dict(output_stages=3, dkdv_stages=3) if D == 64 else dict(dkdv_stages=3)
            for name, fields, gather_from in (("default", {}, default_from), ("stages3", pipes, default_from),
                                              ("gather1", {}, 1), ("default", {}, default_from)):
                config.TAU_GATHER_FROM = gather_from
                with launch_fields(**fields):
                    t, cand = stages(D, inputs, N=N, B=B)
                    t_dq, t_dkdv = bwd_stages(D, inputs, N=N, B=B)
                print(f"D={D} N={N} B={B} {inputs} {name}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, "
                      f"dq {t_dq} ms, dkdv {t_dkdv} ms", flush=True)
        config.TAU_GATHER_FROM = default_from
        sys.exit(0)
    # `stage_times.py fwdsplit`: pass 1 and the output pass as two programs per tile-map block (config.Launch
    # rowmax_split / output_split, each over 64 of the block's 128 rows with num_warps // 2 warps) against one;
    # the τ pass is the same kernel in both (a control for drift), split 1 measured again at the end
    if sys.argv[1:2] == ["fwdsplit"]:
        forward_split_times(SPLIT_CASES, ("rowmax_split", "output_split"))
        sys.exit(0)
    # `stage_times.py tausplit`: every τ launch by blocks as two 4-warp programs per tile-map block (config.Launch
    # tau_split: each sweeps its own 64 rows' candidate tiles; a half block whose rows are done skips its sweep)
    # against one 8-warp program; split 1 measured again at the end (drift). sm_90 offline: one-sweep launches
    # D64 121-127 -> 128 registers, D128 122-125 -> 125-128, no spills
    if sys.argv[1:2] == ["tausplit"]:
        forward_split_times(SPLIT_CASES + [(64, 4096, 8, "clustered")], ("tau_split",))
        sys.exit(0)
    # `stage_times.py bounds`: pass 1's τ bound from richer score sets (config.Launch bound_subsets × bound_depth;
    # tau_sweeps_sim.py topk: 8 × 4 finishes 63% of random and 73% of clustered rows in sweep 0, main's 4 × 4 26% /
    # 55%) under pass-1 register caps (sm_90 offline: D64 4 × 4 62 of the 64 cap, 8 × 4 / 4 × 8 72 at a 72 cap
    # (three programs per SM instead of four) or 64 + 72 bytes of stack at 64; D128 79-80 of its 80 cap, no
    # stack), one with the gathered stragglers from sweep 1 (config.TAU_GATHER_FROM); the default read first and
    # last. Then dk/dv at 3 pipeline stages at D128 (run 63: random N4k -4%; clustered not measured)
    if sys.argv[1:2] == ["bounds"]:
        g = config.TAU_GATHER_FROM

        def bounds(D):
            if D == 64:
                return [("default", {}, g), ("8x4 cap72", dict(bound_subsets=8, rowmax_maxnreg=72), g),
                        ("4x8 cap72", dict(bound_depth=8, rowmax_maxnreg=72), g),
                        ("8x4 cap64", dict(bound_subsets=8), g)]
            return [("default", {}, g), ("8x4", dict(bound_subsets=8), g), ("4x8", dict(bound_depth=8), g),
                    ("8x4 gather1", dict(bound_subsets=8), 1)]
        forward_variant_times([(64, 4096, 8, "random"), (64, 4096, 8, "clustered"), (64, 16384, 2, "clustered"),
                               (64, 16384, 2, "random"), (128, 4096, 8, "random"), (128, 16384, 2, "clustered"),
                               (128, 16384, 2, "random")], bounds)
        backward_variant_times([(128, 4096, 8, "random"), (128, 16384, 2, "clustered"), (128, 4096, 8, "clustered")],
                               [("default", {}), ("dkdv3", dict(dkdv_stages=3)), ("default", {})])
        sys.exit(0)
    # `stage_times.py bounds2`: run 65 found 8 × 4 with gathering from sweep 1 faster at D128 (τ random N4k 2.05 ->
    # 1.77, N16k 7.1-7.3 -> 5.6 ms); the same combinations at D64 (pass 1 at a 72 cap or 64 with stack) and 4 × 8
    # with gathering at both head dims, against the default read first and last
    if sys.argv[1:2] == ["bounds2"]:
        g = config.TAU_GATHER_FROM

        def bounds2(D):
            cap = dict(rowmax_maxnreg=72) if D == 64 else {}
            return ([("default", {}, g), ("8x4 gather1", dict(bound_subsets=8, **cap), 1),
                     ("4x8 gather1", dict(bound_depth=8, **cap), 1)]
                    + ([("8x4 cap64 gather1", dict(bound_subsets=8), 1)] if D == 64 else []))
        forward_variant_times([(64, 4096, 8, "random"), (64, 4096, 8, "clustered"), (64, 16384, 2, "clustered"),
                               (64, 16384, 2, "random"), (128, 4096, 8, "random"), (128, 4096, 8, "clustered"),
                               (128, 16384, 2, "clustered"), (128, 16384, 2, "random")], bounds2)
        sys.exit(0)
    # `stage_times.py dkdvrel`: the dk/dv kernel with scores relative to the row maxima ((x - m) - (τ - m): one
    # more per-row vector and one FADD per score; config.Launch.dkdv_relative) against τ in score units (the dq
    # kernel then also stores τ + m), read first and last
    if sys.argv[1:2] == ["dkdvrel"]:
        backward_variant_times([(64, 4096, 8, "random"), (64, 16384, 2, "random"), (64, 16384, 2, "clustered"),
                                (128, 4096, 8, "random"), (128, 16384, 2, "clustered")],
                               [(f"dkdv_relative={r}", dict(dkdv_relative=r)) for r in (False, True, False, True)])
        sys.exit(0)
    if sys.argv[1:2] == ["bwd"]:
        for D, inputs in [(64, "clustered"), (128, "clustered"), (64, "random")]:
            t_dq, t_dkdv = bwd_stages(D, inputs)
            print(f"D={D} {inputs}: dq {t_dq} ms, dkdv {t_dkdv} ms", flush=True)
        sys.exit(0)
    # `stage_times.py dqone`: dq in two sweeps (δ, then dq) and in one (config.DQ_ONE_SWEEP) under register caps
    # (sm_90 offline, D64: one sweep 181 registers uncapped, 24 bytes of spills at 168, 96 at 128)
    # `stage_times.py dqone 128`: only D128, clustered and random, one sweep against two at the default caps (the
    # one-sweep dq holds two 128-wide accumulators there: 255 registers + 96 bytes of spills offline, two sweeps
    # 202 and none; D128 random was never measured)
    if sys.argv[1:2] == ["dqone"]:
        default_one = config.DQ_ONE_SWEEP
        d128 = sys.argv[2:3] == ["128"]
        cases = [(128, "clustered"), (128, "random")] if d128 else [(64, "clustered"), (64, "random"), (128, "clustered")]
        for D, inputs in cases:
            for one, caps in ((False, ("default",)), (True, ("default",) if d128 else ("default", None, 168))):
                for cap in caps:
                    config.DQ_ONE_SWEEP = one
                    fields = {} if cap == "default" else dict(dq_maxnreg=cap)
                    with launch_fields(**fields):
                        t_dq, t_dkdv = bwd_stages(D, inputs)
                    print(f"D={D} {inputs} DQ_ONE_SWEEP={one} dq_maxnreg={cap}: dq {t_dq} ms, dkdv {t_dkdv} ms",
                          flush=True)
        config.DQ_ONE_SWEEP = default_one
        sys.exit(0)
    # `stage_times.py dkdv`: the dk/dv kernel under (key tiles per program, query rows per chunk) variants
    if sys.argv[1:2] == ["dkdv"]:
        for D, inputs, variants in [(64, "random", [(2, 32), (2, 64)]), (64, "clustered", [(2, 32), (2, 64)]),
                                    (128, "clustered", [(2, 32)]), (128, "random", [(2, 32)])]:
            for kpp, qc in variants:
                with launch_fields(dkdv_kpp=kpp, dkdv_qc=qc):
                    t_dq, t_dkdv = bwd_stages(D, inputs)
                print(f"D={D} {inputs} dkdv kpp={kpp} qc={qc}: dq {t_dq} ms, dkdv {t_dkdv} ms", flush=True)
        sys.exit(0)

    def fwd_bwd(D, inputs):
        """Forward stage times and the backward's two kernels under the current launch configuration."""
        t, cand = stages(D, inputs)
        t_dq, t_dkdv = bwd_stages(D, inputs)
        return f"pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, dq {t_dq} ms, dkdv {t_dkdv} ms", cand

    # `stage_times.py occupancy`: forward stages and backward kernels under per-kernel pipeline depths and
    # register caps (config.Launch knobs: rowmax_stages, split_stages, dq_stages, dq_maxnreg, output_maxnreg)
    if sys.argv[1:2] == ["occupancy"]:
        s3 = dict(rowmax_stages=3, split_stages=3)
        d128 = dict(output_maxnreg=128, dq_stages=1, dq_maxnreg=128)
        plan = [(64, "clustered", [{}, dict(rowmax_stages=3), dict(split_stages=3), s3]),
                (64, "random", [{}, s3]),
                (128, "clustered", [{}, dict(output_maxnreg=128), dict(dq_stages=1), dict(dq_stages=1, dq_maxnreg=128),
                                    dict(rowmax_stages=1, rowmax_maxnreg=64), dict(split_stages=3)]),
                (128, "random", [{}, d128])]
        for D, inputs, variants in plan:
            for fields in variants:
                with launch_fields(**fields):
                    line, _ = fwd_bwd(D, inputs)
                print(f"D={D} {inputs} {fields or 'default'}: {line}", flush=True)
        sys.exit(0)
    # `stage_times.py rowgroup`: forward stages and backward kernels with 16- and 8-row tile-map groups
    if sys.argv[1:2] == ["rowgroup"]:
        for rg in (16, 8):
            with launch_fields(ROW_GROUP=rg):
                for D, inputs in [(64, "clustered"), (128, "clustered"), (64, "random")]:
                    line, cand = fwd_bwd(D, inputs)
                    print(f"D={D} {inputs} ROW_GROUP={rg}: {line}, output-tile fraction {cand}", flush=True)
        sys.exit(0)
    # `stage_times.py maxnreg`: the τ kernel with ptxas choosing its registers and capped at 128
    if sys.argv[1:2] == ["maxnreg"]:
        for D, inputs in [(64, "random"), (64, "clustered")]:
            for mi in (1, 2, None):
                for cap in (None, 128):
                    config.MAXNREG = {"tau": cap} if cap else {}
                    t, cand = stages(D, inputs, max_iters=mi)
                    print(f"D={D} {inputs} max_iters={mi or config.MAX_ITERS_EXACT} tau maxnreg={cap}: "
                          f"pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms", flush=True)
        sys.exit(0)
    for D, inputs in [(64, "clustered"), (128, "clustered"), (64, "random")]:
        for mi in ((None, 1, 2) if len(sys.argv) < 2 else (None,)):
            t, cand = stages(D, inputs, max_iters=mi)
            print(f"D={D} {inputs} max_iters={mi or config.MAX_ITERS_EXACT}: pass1 {t[0]} ms, tau {t[1]} ms, out {t[2]} ms, "
                  f"output-tile fraction {cand}", flush=True)
    sys.exit(0)
