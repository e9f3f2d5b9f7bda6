"""The τ pass: the threshold of every query row, over the candidate tiles only.

It runs as many sweeps over the candidate tiles as needed, in one launch with
a loop over sweeps, or, on large inputs (KernelOptions.tau_split_min_tiles),
one launch per sweep with the per-row iteration state in memory (tau_kernel;
the last sweeps over gathered rows: gather.py):

* α = 1.5 and 2 (KIND 2 / 1): steps from pass 1's lower bound (α = 2: the
  closed form on the current set, i.e. Michelot; α = 1.5: Halley, Newton after
  an overshoot), kept inside a bracket; each sweep also solves the closed form
  on the current set {x > τ} and accepts its root τ + t when no score lies
  between τ and τ + t, on either side: |t| <= min over the row of |x - τ| (the
  set is then the support at τ + t, so that root is the exact τ up to float32
  rounding of the sums; this also accepts an iterate that overshot τ with the
  right support). A row whose next step is below the tolerance is accepted as
  is. Usually 2-3 sweeps.
* any other α (KIND 3, per-head runtime α): a safeguarded Halley iteration
  from pass 1's lower bound on the bracket [bound, m] until the Newton step is
  below ~1e-6 (relative), then that last step if it stays inside the bracket.
  Heads of a per-head tensor whose α is exactly 1.5 or 2 take those kinds'
  sums and steps (a uniform branch per tile on the head's α).
* softmax rows (KIND 0, or α = 1 heads of KIND 3): one sweep, τ = log2-sum-exp.

Sweep 0 also rewrites the block's tile map in row-relative units: entry (g, j)
becomes max over the group's rows i of (max_j x_ij - m_i), and tiles it did not
visit become -inf. Rows of one group often sit at different score levels
(16-row maps in score units still admitted 10% of the tiles at D = 64 on
clustered inputs with 3% nonzero blocks); relative to each row's own maximum
they line up. Later sweeps visit a tile only if some group's entry exceeds min
over the group's unfinished rows of (τ_i - m_i), and the pass stores that
minimum over all rows, τ_min per group, for the output and backward passes
(softmax rows keep score units and τ_min = -inf).

The iterates live in score units (a sweep's y = x - τ stays one fused
multiply-add per score), but the pass stores τ - m, formed from the exact
τ_iter - m plus the last step (tau_step); softmax rows store log2 Σ 2^(x - m).
The output and backward passes work relative to m as well (tiles.row_max).
"""

import triton
import triton.language as tl

from .tiles import (
    block_offsets, block_tile_list, fold_min, fold_sum, group_reduce_max, group_reduce_min, head_alpha, load_cols,
    load_rows, map_value, mask_tile, query_block, query_program, row_offset, safe_max, score_tile,
)

# The general kind's τ sweeps take log2 from the hardware's lg2.approx.f32 (MUFU.LG2) when FAST_LOG2
# (KernelOptions.fast_log2; the interpreter has no inline assembly): Triton lowers tl.log2 to libdevice's log2f, a
# ~12-FMA polynomial with special-case selects that made a sweep ~5x the cost of an α = 1.5 sweep (D64 N16k
# random; docs/performance.md). Only for heads with α >= 1.1: lg2.approx's absolute error (2^-22.6 near 1) enters
# Σ y^s as s times that, and the root τ inherits it; at s = 1/(α-1) <= 10 that is ~1e-6 of Σ y^s, within float32
# rounding of a long sum, while near α = 1 (s = 50) it would reach the outputs' tolerance.
FAST_LOG2_MAX_INV_A = tl.constexpr(10.0)


@triton.jit
def log2_mufu(y):
    """lg2.approx.f32 of float32 y (MUFU.LG2: absolute error <= 2^-22.6 on [0.5, 2), relative 2^-22 elsewhere)."""
    return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [y], dtype=tl.float32, is_pure=True,
                                     pack=1)


@triton.jit
def rel_margin(r):
    """A threshold r = τ - m in the units of the rewritten tile map, lowered by a relative 1e-6 so that float
    rounding of max(x) - m can never hide a tile holding a score above τ."""
    return r - 1e-6 * (1.0 + tl.abs(r))


@triton.jit
def rel_thr(tau, m):
    """rel_margin of an iterate τ in score units."""
    return rel_margin(tau - m)


@triton.jit
def _exact_sums(y, h0, h1, h2, h3, SQUARES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """tile_sums for α = 1.5 (SQUARES) and α = 2: count, Σ y, Σ y² over y > 0, and min |y|."""
    ins = y > 0
    yz = tl.maximum(y, 0.0)
    h0 += fold_sum(ins.to(tl.float32), BLOCK_M, BLOCK_N)
    h1 += fold_sum(yz, BLOCK_M, BLOCK_N)
    if SQUARES:
        h2 += fold_sum(yz * yz, BLOCK_M, BLOCK_N)
    # min |y| over every score (one min with an |.| operand): the nearest score to τ on either side
    h3 = tl.minimum(h3, fold_min(tl.abs(y), BLOCK_M, BLOCK_N))
    return h0, h1, h2, h3


@triton.jit
def tile_sums(y, h0, h1, h2, h3, inv_a, KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              FAST_LOG2: tl.constexpr):
    """Add one tile's y = x - τ to a sweep's per-row sums, kept in quarter tiles (fold_sum; reduced once after
    the sweep): the terms of f, f', f'' at τ (see tau_step) and, for α = 1.5 / 2, min |y| in h3. A per-head α
    (KIND 3) of exactly 1.5 or 2 takes those kinds' sums (one branch per tile: α is the head's; its scores are
    in the same units), so that a per-head tensor pays the general kind's powers only on heads that need them."""
    if KIND == 3:
        if inv_a == 2.0:
            h0, h1, h2, h3 = _exact_sums(y, h0, h1, h2, h3, True, BLOCK_M, BLOCK_N)
        elif inv_a == 1.0:
            h0, h1, h2, h3 = _exact_sums(y, h0, h1, h2, h3, False, BLOCK_M, BLOCK_N)
        else:
            ins = y > 0
            yp = tl.where(ins, y, 1.0)
            if FAST_LOG2:
                if inv_a <= FAST_LOG2_MAX_INV_A:
                    l2 = log2_mufu(yp)
                else:
                    l2 = tl.log2(yp)
            else:
                l2 = tl.log2(yp)
            t0 = tl.exp2(l2 * inv_a)
            # one reciprocal for both powers below (two divisions cost two MUFU.RCP per score)
            ry = 1.0 / yp
            t1 = t0 * ry
            h0 += fold_sum(tl.where(ins, t0, 0.0), BLOCK_M, BLOCK_N)
            h1 += fold_sum(tl.where(ins, t1, 0.0), BLOCK_M, BLOCK_N)
            h2 += fold_sum(tl.where(ins, t1 * ry, 0.0), BLOCK_M, BLOCK_N)
    else:
        h0, h1, h2, h3 = _exact_sums(y, h0, h1, h2, h3, KIND == 2, BLOCK_M, BLOCK_N)
    return h0, h1, h2, h3


@triton.jit
def _sweep_sums(q, k_base, kpm_row, am_row, sam_q, sam_k, wl, wr, start_m, offs_m, offs_n0, offs_d, Lq, Lk, skn,
                qk_scale, inv_a, tau, m_safe, thr, tmax_row, tlist, n_tiles, n_kblk, offs_g, D: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RG: tl.constexpr, KIND: tl.constexpr,
                CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
                PREC: tl.constexpr, KCHUNK: tl.constexpr, FIRST: tl.constexpr, NG: tl.constexpr,
                FAST_LOG2: tl.constexpr):
    """One τ sweep over the candidate tiles: the per-row sums at the current τ (see tau_step) and, for α = 1.5 / 2,
    the distance min |x - τ| from τ to the nearest score. NG: the query block's row groups (tile map rows, thr)."""
    INF: tl.constexpr = float("inf")
    HN: tl.constexpr = BLOCK_N // 4
    # per-row sums accumulate in quarter tiles and are reduced once after the loop (fold_sum)
    h0 = tl.zeros([BLOCK_M, HN], tl.float32)
    h1 = tl.zeros([BLOCK_M, HN], tl.float32)
    h2 = tl.zeros([BLOCK_M, HN], tl.float32)
    h3 = tl.full([BLOCK_M, HN], INF, tl.float32)
    count = block_tile_list(tmax_row, n_kblk, thr, n_tiles, tlist, FIRST, KCHUNK, NG)
    # the map rewrite below computes max(x) - m as max(y) + (τ - m): a few ulps of m above, so that its
    # rounding never lowers an entry below a score's true x - m (tiles must not be skipped wrongly)
    rel_shift = tau - m_safe + 2.5e-7 * tl.abs(m_safe)
    for i in range(0, count):
        tile = tl.load(tlist + i)
        start_n = tile * BLOCK_N
        offs_n = start_n + offs_n0
        # y = x - τ as one fused multiply-add of the raw q·kᵀ (x = qk_scale · q·kᵀ), masked afterwards: one
        # instruction per score fewer than scaling first (the mask test sits between the two otherwise)
        kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
        y = mask_tile(tl.dot(q, kT, input_precision=PREC) * qk_scale - tau[:, None], start_m, start_n, offs_m, offs_n,
                      Lq, Lk, kpm_row, am_row, sam_q, sam_k, wl, wr, BLOCK_M, BLOCK_N, CAUSAL, HAS_KPM, HAS_MASK,
                      WINDOW)
        if FIRST:
            rel = group_reduce_max(tl.max(y, 1) + rel_shift, BLOCK_M, RG)
            tl.store(tmax_row + offs_g * n_kblk + tile, map_value(rel))
        h0, h1, h2, h3 = tile_sums(y, h0, h1, h2, h3, inv_a, KIND, BLOCK_M, BLOCK_N, FAST_LOG2)
    return tl.sum(h0, 1), tl.sum(h1, 1), tl.sum(h2, 1), tl.min(h3, 1)


@triton.jit
def tau_step(c0, c1, c2, dmin, todo, tau, m, lo, hi_b, res, done, inv_a, KIND: tl.constexpr, W: tl.constexpr):
    """Accept the rows whose τ is exact and take the next iterate for the others (module docstring). W: how far
    below τ the sweep's tiles reach (scores in the tiles it skipped are at most τ - W), and so how far below τ a
    root may be accepted: 0 for sweep 0, whose τ is a lower bound. The iterate τ and the bracket are in score
    units; an accepted root goes to res as τ_root - m (m: the row maximum, 0 for rows without one), formed as
    (τ - m) + step: τ - m is exact, so the root keeps the precision of the step, not one ulp of |τ| (3e-5 at
    |τ| ~ 400). A per-head α (KIND 3) of exactly 1.5 or 2 takes those kinds' step (tile_sums gave it their sums)."""
    rel = tau - m
    if KIND == 3:
        if inv_a == 2.0:
            tau, lo, hi_b, res, done = _exact_step(c0, c1, c2, dmin, todo, tau, rel, m, lo, hi_b, res, done, False, W)
        elif inv_a == 1.0:
            tau, lo, hi_b, res, done = _exact_step(c0, c1, c2, dmin, todo, tau, rel, m, lo, hi_b, res, done, True, W)
        else:
            tau, lo, hi_b, res, done = _general_step(c0, c1, c2, todo, tau, rel, lo, hi_b, res, done, inv_a)
    else:
        tau, lo, hi_b, res, done = _exact_step(c0, c1, c2, dmin, todo, tau, rel, m, lo, hi_b, res, done, KIND == 1, W)
    return tau, lo, hi_b, res, done


@triton.jit
def _general_step(c0, c1, c2, todo, tau, rel, lo, hi_b, res, done, inv_a):
    """tau_step for any α: safeguarded Halley on the sums of tile_sums' general kind."""
    # f = Σ y^s - 1, f' = -s Σ y^(s-1), f'' = s (s-1) Σ y^(s-2)
    f = c0 - 1.0
    fp = -inv_a * c1
    fpp = inv_a * (inv_a - 1.0) * c2
    lo = tl.where(todo & (f > 0), tau, lo)
    hi_b = tl.where(todo & (f <= 0), tau, hi_b)
    newton = tl.where(fp < 0, f / tl.where(fp < 0, fp, -1.0), 0.0)
    den = 2.0 * fp * fp - f * fpp
    halley = tl.where((f > 0) & (den > 0), 2.0 * f * fp / tl.where(den > 0, den, 1.0), newton)
    step = tau - halley
    inside = (step > lo) & (step < hi_b)
    cand = tl.where(inside, step, 0.5 * (lo + hi_b))
    tol = 1e-6 * tl.maximum(tl.abs(tau), 1.0)
    conv = todo & ((tl.abs(newton) <= tol) | (hi_b - lo <= tol))
    # a converged row also takes its last step when that stays inside the bracket: stopping at τ itself
    # left an error up to tol (~16 float32 ulps at |τ| ~ 100), which p = y^(1/(α-1)) amplifies past the
    # tolerance rule (α = 1.25, scale 91: 1.4e-4 against 8e-5). Not the bisection fallback: a step that
    # rounds onto the bracket's end (f = 0 exactly at τ) would jump to the far midpoint. The step is judged
    # against the bracket as a difference (-halley against lo - τ, hi - τ: exact for nearby floats), not as
    # the rounded candidate τ - halley: at |τ| ~ 2000 (scale 1000) a last step below half an ulp of τ
    # rounded onto τ = lo, failed the test and left τ half an ulp off (one key: p = 1 - 1.5e-4 in the
    # backward; the GPU property test keeps that case as an explicit example)
    inside_d = (-halley > lo - tau) & (-halley < hi_b - tau)
    res = tl.where(conv, tl.where(inside_d, rel - halley, rel), res)
    done = done | conv
    tau = tl.where(todo & ~conv, cand, tau)
    return tau, lo, hi_b, res, done


@triton.jit
def _exact_step(c0, c1, c2, dmin, todo, tau, rel, m, lo, hi_b, res, done, SPARSE: tl.constexpr, W: tl.constexpr):
    """tau_step for α = 2 (SPARSE) and α = 1.5: the closed form on the current support, accepted when exact."""
    # closed form on S = {x > τ}, in units shifted by τ
    cnt = tl.maximum(c0, 1.0)
    if SPARSE:
        t = (c1 - 1.0) / cnt
        step = t
    else:
        mean = c1 / cnt
        t = mean - tl.sqrt(tl.maximum((1.0 - (c2 - c1 * mean)) / cnt, 0.0))
        # Halley on f = Σ y^2 - 1 (f' = -2 Σ y, f'' = 2 count) from the left,
        # Newton after an overshoot (f < 0): 5-6 sweeps instead of Newton's 8
        f = c2 - 1.0
        fp = -2.0 * tl.maximum(c1, 1e-30)
        den = 2.0 * fp * fp - f * 2.0 * c0
        step = tl.where((f > 0) & (den > 0), -2.0 * f * fp / tl.where(den > 0, den, 1.0), -f / fp)
    # exact when no score lies between τ and the root τ + t (either side; dmin covers the visited tiles, W
    # the skipped ones): the set {x > τ} is then the support at τ + t. Accepts iterates below τ* and, unlike
    # a test on the members alone, those that overshot it with the right support (Halley's second iterate
    # often does, by 1e-5..3e-4 on dense rows)
    tol = 1e-5 * tl.maximum(tl.abs(tau), 1.0)
    ok = todo & (c0 > 0) & (tl.abs(t) <= dmin + tol) & (t >= -(W + tol))
    res = tl.where(ok, rel + t, res)
    # keep a bracket: a step that leaves it (overshoot past m, or below a
    # proven lower bound) is replaced by bisection
    if SPARSE:
        fval = c1 - 1.0
    else:
        fval = c2 - 1.0
    lo = tl.where(todo & (fval > 0), tau, lo)
    hi_b = tl.where(todo & (fval <= 0), tau, hi_b)
    cand = tau + step
    inside = (cand > lo) & (cand < hi_b)
    cand = tl.where(inside, cand, 0.5 * (lo + hi_b))
    # a row whose next iterate moves by less than the tolerance is at its root to within it: accept the
    # iterate (rows whose closed form misses the consistency test only by float32 rounding of the sums
    # otherwise repeat sweeps until the iteration limit: 22-180 such rows per call kept 10 launches busy)
    near = todo & ~ok & (tl.abs(cand - tau) <= tol)
    res = tl.where(near, tl.where(inside, rel + step, cand - m), res)
    done = done | ok | near
    tau = tl.where(todo & ~ok, cand, tau)
    return tau, lo, hi_b, res, done


@triton.jit
def load_state(st, sst, mask, valid):
    """A split τ pass's per-row iteration state at st (planes sst apart: iterate, bracket low / high, accepted
    root τ - m or inf) and which rows are done (invalid, or a root accepted)."""
    tau = tl.load(st, mask=mask, other=0.0)
    lo = tl.load(st + sst, mask=mask, other=0.0)
    hi_b = tl.load(st + 2 * sst, mask=mask, other=0.0)
    res = tl.load(st + 3 * sst, mask=mask, other=float("inf"))
    return tau, lo, hi_b, res, ~valid | (res < float("inf"))


@triton.jit
def store_state(st, sst, mask, tau, lo, hi_b, res):
    """The inverse of load_state."""
    tl.store(st, tau, mask=mask)
    tl.store(st + sst, lo, mask=mask)
    tl.store(st + 2 * sst, hi_b, mask=mask)
    tl.store(st + 3 * sst, res, mask=mask)


@triton.jit
def tau_kernel(
    Q, K, KPM, AM, CU_Q, CU_K, ALPHA, M, TMAX, TAU, TAUMIN, LISTS, ST, COUNT,
    sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h, sam_q, sam_k, wl, wr, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale, sst, share,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, RG: tl.constexpr, KCHUNK: tl.constexpr, FIRST: tl.constexpr, STATE: tl.constexpr,
    N_LOOP: tl.constexpr, W: tl.constexpr, SPLIT: tl.constexpr, ADAPT: tl.constexpr, FAST_LOG2: tl.constexpr,
):
    """The τ pass. Fused (FIRST, not STATE): sweep 0 and up to N_LOOP further sweeps in one
    launch. Split (STATE): the iteration's per-row state (iterate, bracket, accepted root) is kept in ST
    (4 planes of sst floats) between launches: the launch with FIRST runs sweep 0, each later launch up to
    N_LOOP more sweeps for the blocks that still have unfinished rows (others only rewrite their results).
    A kernel with a loop over sweeps needs ~250 registers on sm_90, one sweep ~128: two programs per SM
    instead of one.
    SPLIT > 1: a program owns BLOCK_M // SPLIT rows of a tile-map block: it sweeps the tiles its own row groups
    need (their map rows, τ_min entries and its own slot of LISTS), so that the pass can run as smaller programs
    of the same per-thread work and a half block whose rows are done skips its sweeps.
    ADAPT (a split pass's later launch): the launch does nothing for a (batch, head) with at most Lq / share
    unfinished rows as COUNT counted them (gather.gather_rows_kernel): their rows wait for the gathered sweeps, and
    state and results stay as the previous launch left them."""
    BM: tl.constexpr = BLOCK_M // SPLIT
    pid_m, sub, pid_bh, b, h, hk, qs, Lq, ks, Lk, start_m = query_program(H, G, CU_Q, CU_K, Nq, Nk, n_qblk, BM,
                                                                          SPLIT, CAUSAL, IS_VARLEN)
    go = start_m < Lq
    if ADAPT:
        go = go & (tl.load(COUNT + pid_bh).to(tl.float32) * share > Lq)
    if go:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, am_row, _lo, hi = query_block(
            Q, K, KPM, AM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h, wl, wr,
            BM, BLOCK_N, BLOCK_D, CAUSAL, WINDOW)
        stat_off = row_offset(b, h, qs, smb, smh, 1)
        rmask = offs_m < Lq
        m = tl.load(M + stat_off + offs_m, mask=rmask, other=float("-inf"))
        valid = m > float("-inf")
        m_safe = safe_max(m)
        if FIRST:
            q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        NG: tl.constexpr = BM // RG  # this program's row groups
        offs_g = tl.arange(0, NG)
        map_off, taumin_off, list_off = block_offsets(pid_bh, pid_m, n_qblk, n_kblk, NG, SPLIT, sub)
        tmax_row = TMAX + map_off
        tlist = LISTS + list_off
        n_tiles = tl.cdiv(hi, BLOCK_N)
        INF: tl.constexpr = float("inf")
        if KIND == 0:
            soft_rows = True
        elif KIND == 3:
            soft_rows = is_soft
        else:
            soft_rows = False
        if soft_rows:
            # softmax: τ2 - m = log2 Σ 2^(x - m) over every visible key (a split pass does it in its first launch;
            # later launches find the result final and only rewrite it)
            tau_min = tl.full([NG], float("-inf"), tl.float32)  # softmax: no tile is skipped
            if FIRST:
                lsum_h = tl.zeros([BM, BLOCK_N // 4], tl.float32)
                count = block_tile_list(tmax_row, n_kblk, tau_min, n_tiles, tlist, False, KCHUNK, NG)
                for i in range(0, count):
                    start_n = tl.load(tlist + i) * BLOCK_N
                    offs_n = start_n + offs_n0
                    _, x = score_tile(q, k_base, start_m, start_n, offs_m, offs_n, offs_d, Lq, Lk, skn, qk_scale,
                                      m_safe, kpm_row, am_row, sam_q, sam_k, wl, wr, D, BM, BLOCK_N, CAUSAL, HAS_KPM,
                                      HAS_MASK, WINDOW, PREC)
                    lsum_h += fold_sum(tl.exp2(x), BM, BLOCK_N)
                lsum = tl.sum(lsum_h, 1)
                tau = tl.where(valid, tl.log2(tl.where(valid, lsum, 1.0)), INF)
            else:
                tau = tl.load(TAU + stat_off + offs_m, mask=rmask, other=INF)
        else:
            st = ST + stat_off + offs_m
            if FIRST:
                # the iteration starts at a lower bound of τ: pass 1's top_bound where it lies in (m - 1, m),
                # else (e.g. a NaN row's) m - 1
                tau = m_safe - 1.0
                lb = tl.load(TAU + stat_off + offs_m, mask=rmask, other=0.0)
                tau = tl.where((lb > tau) & (lb < m_safe), lb, tau)
                res = tl.full([BM], INF, tl.float32)
                done = ~valid
                lo = tau
                hi_b = m_safe
                # sweep 0 (peeled: a branch inside the tile loop would stop its pipelining) reads pass 1's
                # map in score units with τ at the lower bound; it rewrites the map of its candidate tiles as
                # the group's max of (x - m_i) and clears the others, so later tests are per row
                if tl.sum(valid.to(tl.int32), 0) > 0:
                    # tile candidacy from the lower bound (pass 1's map is in score units)
                    thr = group_reduce_min(tl.where(valid, tau, INF), BM, RG)
                    c0, c1, c2, dmin = _sweep_sums(q, k_base, kpm_row, am_row, sam_q, sam_k, wl, wr, start_m,
                                                   offs_m, offs_n0, offs_d, Lq, Lk, skn, qk_scale, inv_a, tau, m_safe,
                                                   thr, tmax_row, tlist, n_tiles, n_kblk, offs_g, D, BM, BLOCK_N, RG,
                                                   KIND, CAUSAL, HAS_KPM, HAS_MASK, WINDOW, PREC, KCHUNK, True, NG,
                                                   FAST_LOG2)
                    tau, lo, hi_b, res, done = tau_step(c0, c1, c2, dmin, valid, tau, m_safe, lo, hi_b, res, done,
                                                        inv_a, KIND, 0.0)
            else:
                # a later launch of a split pass: the state the previous launch left
                tau, lo, hi_b, res, done = load_state(st, sst, rmask, valid)
            # later sweeps also visit the tiles up to W below τ (configs.sweep_margin), so that a root up to W
            # below the iterate can be verified (tau_step); that admits few tiles more
            for it in range(0, N_LOOP):
                todo = valid & ~done
                n_todo = tl.sum(todo.to(tl.int32), 0)
                if n_todo > 0:
                    if not FIRST:  # a later split launch loads q only when its block has work left
                        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
                    thr = group_reduce_min(tl.where(todo, rel_thr(tau, m_safe) - W, INF), BM, RG)
                    c0, c1, c2, dmin = _sweep_sums(q, k_base, kpm_row, am_row, sam_q, sam_k, wl, wr, start_m,
                                                   offs_m, offs_n0, offs_d, Lq, Lk, skn, qk_scale, inv_a, tau, m_safe,
                                                   thr, tmax_row, tlist, n_tiles, n_kblk, offs_g, D, BM, BLOCK_N, RG,
                                                   KIND, CAUSAL, HAS_KPM, HAS_MASK, WINDOW, PREC, KCHUNK, False, NG,
                                                   FAST_LOG2)
                    tau, lo, hi_b, res, done = tau_step(c0, c1, c2, dmin, todo, tau, m_safe, lo, hi_b, res, done,
                                                        inv_a, KIND, W)
            if STATE:
                store_state(st, sst, rmask, tau, lo, hi_b, res)
            # τ - m: rows that hit the iteration limit keep the last iterate (accurate to rounding); every launch of a
            # split pass writes the results as they stand, so the last one leaves them final
            tau = tl.where(valid & ~done, tau - m_safe, res)
            tau = tl.where(valid, tau, INF)
            tau_min = group_reduce_min(tl.where(valid, rel_margin(tau), INF), BM, RG)
        tau = tl.where(m != m, float("nan"), tau)  # NaN / +inf scores: the row is NaN
        tl.store(TAU + stat_off + offs_m, tau, mask=rmask)
        tl.store(TAUMIN + taumin_off + offs_g, tau_min)
