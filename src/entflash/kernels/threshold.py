"""The threshold stage: pass 1 (row max + tile map) and the τ pass.

Pass 1 is the only dense pass: it sees every visible score once, keeps the row
maximum m_i and writes the tile map: per group of ROW_GROUP (16) query rows
and BLOCK_N keys, the maximum score (rounded up to bfloat16). For entmax,
τ_i >= m_i - 1 (x units), so a tile whose group maxima are all at most the
groups' min_i (m_i - 1) can never hold a nonzero and no later pass reads it.
Pass 1 already drops (-inf) the tiles whose maxima lie more than 1 below the
running maximum of every row of the group. For entmax it also keeps, per row,
the four largest maxima of each of four column subsets (those one thread
holds, common.fold_max4): 16 different scores whose threshold alone is a
lower bound of τ_i, at least m_i - 1 and on dense rows within ~0.01 of τ_i
(top_bound; any other α than 1.5 and 2: top_bound_general, since session 10);
sweep 0 starts there and visits only the tiles above it.

The τ pass then runs as many sweeps over the candidate tiles as needed, in
one launch with a loop over sweeps, or, on large inputs (config.TAU_SPLIT),
one launch per sweep with the per-row iteration state in memory (tau_kernel):

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
* softmax rows (KIND 0, or α = 1 heads of KIND 3): one sweep, τ = log2-sum-exp.

Sweep 0 also rewrites the block's tile map in row-relative units: entry (g, j)
becomes max over the group's rows i of (max_j x_ij - m_i), and tiles it did not
visit become -inf. Rows of one group often sit at different score levels
(run 5: 16-row maps in score units still admitted 10% of the tiles at D = 64
on clustered inputs with 3% nonzero blocks); relative to each row's own
maximum they line up. Later sweeps visit a tile only if some group's entry
exceeds min over the group's unfinished rows of (τ_i - m_i), and the pass
stores that minimum over all rows, τ_min per group, for the output and
backward passes (softmax rows keep score units and τ_min = -inf).

The iterates live in score units (a sweep's y = x - τ stays one fused
multiply-add per score), but the pass stores τ - m, formed from the exact
τ_iter - m plus the last step (tau_step); softmax rows store log2 Σ 2^(x - m).
The output and backward passes work relative to m as well (common.row_max).
"""

import triton
import triton.language as tl

from . import config
from .common import (
    max_nan, block_offsets, block_part, block_tile_list, fold_max4, fold_max8, fold_min, fold_sum, group_reduce_max,
    group_reduce_min, head_alpha, insert4, load_cols, load_rows, map_value, mask_tile, program_ids, query_block,
    row_offset,
    safe_max, score_tile,
)


# The general kind's τ sweeps take log2 from the hardware's lg2.approx.f32 (MUFU.LG2) on the GPU: Triton lowers
# tl.log2 to libdevice's log2f, a ~12-FMA polynomial with special-case selects that made a sweep cost 11.4 ms
# at D64 N16k on random inputs against ~2 for α = 1.5 (run 47, NOTES session 10). The interpreter has no
# inline assembly, so it keeps tl.log2.
MUFU_LOG2 = tl.constexpr(not config.interpreting())
# ... for heads with α >= 1.1 only: lg2.approx's absolute error (2^-22.6 near 1) enters Σ y^s as s times that,
# and the root τ inherits it; at s = 1/(α-1) <= 10 that is ~1e-6 of Σ y^s, within float32 rounding of a long
# sum, while near α = 1 (s = 50) it would reach the outputs' tolerance.
MUFU_LOG2_MAX_INV_A = tl.constexpr(10.0)


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
def top_bound_general(m, vals, inv_a):
    """top_bound for any α (s = 1/(α-1) >= 1): Newton steps from m - 1 on h(τ) = (Σ (v - τ)_+^s)^(1/s) - 1 over
    the row's NV scores v. h is convex and decreasing in τ (a norm of the convex (v - τ)_+), so every Newton
    iterate from the left stays at or below the subproblem's root, itself a lower bound of τ; and h is close to
    linear (exactly, with one score above τ), so six steps reach that root to ~1e-7 (CPU check, α 1.05-2,
    NOTES session 10) where Newton on Σ y^s - 1 needs many more (its far-left steps shrink the gap by only
    ~1/s)."""
    d = vals - m[:, None]
    ok = d > float("-inf")  # False for absent entries and NaN rows
    r = tl.zeros_like(m) - 1.0  # τ - m
    for _ in tl.static_range(6):
        y = tl.where(ok, d - r[:, None], 0.0)
        live = y > 0
        yp = tl.where(live, y, 1.0)
        t0 = tl.where(live, tl.exp2(tl.log2(yp) * inv_a), 0.0)
        big_s = tl.sum(t0, 1)
        big_t = tl.sum(tl.where(live, t0 / yp, 0.0), 1)
        # Newton on h: τ += (S - S^(1 - 1/s)) / Σ y^(s-1); S >= 1 on the left of the root
        go = (big_s > 1.0) & (big_t > 0)
        sn = tl.where(go, big_s, 1.0)
        step = (sn - tl.exp2(tl.log2(sn) * (1.0 - 1.0 / inv_a))) / tl.where(go, big_t, 1.0)
        r = r + tl.where(go, step, 0.0)
    # margin against float rounding (the bound decides which tiles sweep 0 may skip)
    return m + r - 1e-5 * (1.0 + tl.abs(m))


@triton.jit
def top_bound(m, vals, KIND: tl.constexpr, NV: tl.constexpr):
    """A lower bound of τ (α = 1.5: KIND 2, α = 2: KIND 1; other α: top_bound_general) from NV different scores
    of a row, vals (BLOCK_M, NV), among them the row maximum m (-inf where a row saw fewer): the threshold of the
    same problem on those
    scores alone, since the full sum Σ (x - τ)_+^p is at least the sum over any subset. Sort-based: the closed
    form on the j largest, kept when consistent (below the j-th), the largest such; j = 1 gives m - 1."""
    s = tl.sort(vals, 1, descending=True)
    d = s - m[:, None]
    ok = d > float("-inf")  # False for absent entries and NaN rows
    dz = tl.where(ok, d, 0.0)
    s1 = tl.cumsum(dz, 1)
    j = (tl.arange(0, NV) + 1).to(tl.float32)[None, :]
    if KIND == 1:
        c = (s1 - 1.0) / j
    else:
        s2 = tl.cumsum(dz * dz, 1)
        mean = s1 / j
        arg = (1.0 - (s2 - s1 * mean)) / j
        ok = ok & (arg >= 0.0)
        c = mean - tl.sqrt(tl.maximum(arg, 0.0))
    r = tl.max(tl.where(ok & (c < d), c, -1.0), 1)  # τ - m
    # margin against float rounding of the sums (the bound decides which tiles sweep 0 may skip)
    return m + r - 1e-5 * (1.0 + tl.abs(m))


@triton.jit
def rowmax_kernel(
    Q, K, KPM, CU_Q, CU_K, ALPHA, M, TAU0, TMAX,
    sqb, sqh, sqn, skb, skh, skn, skpm, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, RG: tl.constexpr, NEG_SCALE: tl.constexpr, SPLIT: tl.constexpr = 1,
    NSUB: tl.constexpr = 4, DEPTH: tl.constexpr = 4,
):
    """Pass 1: row maxima (M), the tile map (TMAX) and, for entmax, the τ pass's lower bound (top_bound or
    top_bound_general, into TAU0). SPLIT > 1: a program owns BLOCK_M // SPLIT rows of a tile-map block (and
    their row groups' map rows), so that the pass can run as smaller programs of the same per-thread work.
    NSUB (4 or 8) column subsets per tile and DEPTH (4 or 8) largest maxima of each for the bound
    (config.Launch.bound_subsets / bound_depth): NSUB · DEPTH scores per row."""
    pid, pid_m, sub = block_part(n_qblk, SPLIT, CAUSAL)
    BM: tl.constexpr = BLOCK_M // SPLIT
    pid_bh = tl.program_id(1)
    b, h, hk, qs, Lq, ks, Lk = program_ids(pid_bh, H, G, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    start_m = pid * BM
    if start_m < Lq:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, hi = query_block(
            Q, K, KPM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, BM, BLOCK_N,
            BLOCK_D, CAUSAL)
        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        m = tl.full([BM], float("-inf"), tl.float32)
        NG: tl.constexpr = BM // RG
        offs_g = tl.arange(0, NG)
        # map rows of this program's NG row groups; tiles past the causal bound keep the host's -inf
        map_off = block_offsets(pid_bh, pid_m, n_qblk, n_kblk, NG, SPLIT, sub)[0]
        tmax_row = TMAX + map_off + offs_g * n_kblk
        # entmax kinds: each thread's four largest partial maxima (fold_max4: per tile, the maxima of four column
        # subsets, those of a thread in the MMA layout), (BM, 4) each: 16 different scores per row for top_bound
        BOUND: tl.constexpr = KIND != 0
        tl.static_assert((NSUB == 4 or NSUB == 8) and (DEPTH == 4 or DEPTH == 8))
        t1 = tl.full([BM, NSUB], float("-inf"), tl.float32)
        t2 = tl.full([BM, NSUB], float("-inf"), tl.float32)
        t3 = tl.full([BM, NSUB], float("-inf"), tl.float32)
        t4 = tl.full([BM, NSUB], float("-inf"), tl.float32)
        if DEPTH == 8:
            t5 = tl.full([BM, NSUB], float("-inf"), tl.float32)
            t6 = tl.full([BM, NSUB], float("-inf"), tl.float32)
            t7 = tl.full([BM, NSUB], float("-inf"), tl.float32)
            t8 = tl.full([BM, NSUB], float("-inf"), tl.float32)
        # the scale is applied to the row maxima of q·kᵀ, not to every score: fl(d·|s|) is monotone in d, so
        # fl(max_j d_j · |s|) = max_j fl(d_j · |s|) bit for bit, and with q negated (exact) for s < 0 the
        # products equal fl(d · s), the scores every other kernel computes. -inf (masked) stays -inf
        # (also for s = 0); NaN stays NaN. NEG_SCALE (scale < 0, known on the host: α - 1 >= 0 as documented,
        # α = 1 heads use log2 e) is its own variant: negating q in registers makes the dot take it from
        # registers, which costs the common case 8 registers and spills under the 64-register cap.
        if NEG_SCALE:
            q = -q
        s_abs = tl.abs(qk_scale)
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + offs_n0
            kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
            d = mask_tile(tl.dot(q, kT, input_precision=PREC), start_m, start_n, offs_m, offs_n, Lq, Lk, kpm_row,
                          BM, BLOCK_N, CAUSAL, HAS_KPM)
            # NaN-propagating maxima: a NaN score makes its row NaN, and its tile map entry +inf
            # (map_value: the tile's true maximum is unknown, so it stays a candidate for the group)
            if BOUND:
                if NSUB == 8:
                    pm = fold_max8(d, BM, BLOCK_N)
                else:
                    pm = fold_max4(d, BM, BLOCK_N)
                xm = tl.reduce(pm, 1, max_nan)
                pv = tl.where(pm > float("-inf"), pm * s_abs, pm)
                # insert pv into (t1, ..., t4) (and on into t5..t8). A NaN (only in a NaN row, whose bound the τ
                # pass ignores) is not inserted, but can repeat an entry one level down
                t1, t2, t3, t4, out = insert4(t1, t2, t3, t4, pv)
                if DEPTH == 8:
                    t5, t6, t7, t8, out = insert4(t5, t6, t7, t8, out)
            else:
                xm = tl.reduce(d, 1, max_nan)
            xm = tl.where(xm > float("-inf"), xm * s_abs, xm)
            m = max_nan(m, xm)
            entry = map_value(group_reduce_max(xm, BM, RG))
            if KIND != 0:
                # running filter (entmax rows): τ_i >= m_i - 1 >= runmax_i - 1, so a tile whose maxima sit more
                # than 1 below every group row's running maximum (this tile included) can hold no nonzero: no
                # pass visits it (-inf). Margin 1e-5 (1 + |m|) against rounding; NaN (NaN scores, or no key
                # seen yet) keeps the tile. Softmax heads of a per-head α need every tile.
                r = xm - m + 1e-5 * (1.0 + tl.abs(m))
                r = tl.where(r == r, r, float("inf"))
                dead = group_reduce_max(r, BM, RG) < -1.0
                if KIND == 3:
                    dead = dead & (is_soft == 0)
                entry = tl.where(dead, float("-inf"), entry)
            tl.store(tmax_row + start_n // BLOCK_N, entry)
        m = tl.where(m == float("inf"), float("nan"), m)
        stat = row_offset(b, h, qs, smb, smh, 1) + offs_m
        tl.store(M + stat, m, mask=offs_m < Lq)
        if BOUND:
            NV: tl.constexpr = NSUB * DEPTH
            vals = tl.join(tl.join(t1, t2), tl.join(t3, t4))
            if DEPTH == 8:
                vals = tl.join(vals, tl.join(tl.join(t5, t6), tl.join(t7, t8)))
            vals = tl.reshape(vals, (BM, NV))
            if KIND == 3:
                lb = top_bound_general(m, vals, inv_a)
            else:
                lb = top_bound(m, vals, KIND, NV)
            tl.store(TAU0 + stat, lb, mask=offs_m < Lq)


@triton.jit
def tile_sums(y, h0, h1, h2, h3, inv_a, KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Add one tile's y = x - τ to a sweep's per-row sums, kept in quarter tiles (fold_sum; reduced once after
    the sweep): the terms of f, f', f'' at τ (see tau_step) and, for α = 1.5 / 2, min |y| in h3."""
    ins = y > 0
    if KIND == 3:
        yp = tl.where(ins, y, 1.0)
        if MUFU_LOG2:
            if inv_a <= MUFU_LOG2_MAX_INV_A:  # one branch per tile: α is the head's
                l2 = log2_mufu(yp)
            else:
                l2 = tl.log2(yp)
        else:
            l2 = tl.log2(yp)
        t0 = tl.exp2(l2 * inv_a)
        # one reciprocal for both powers below (two divisions cost two MUFU.RCP per score; NOTES session 10)
        ry = 1.0 / yp
        t1 = t0 * ry
        h0 += fold_sum(tl.where(ins, t0, 0.0), BLOCK_M, BLOCK_N)
        h1 += fold_sum(tl.where(ins, t1, 0.0), BLOCK_M, BLOCK_N)
        h2 += fold_sum(tl.where(ins, t1 * ry, 0.0), BLOCK_M, BLOCK_N)
    else:
        yz = tl.maximum(y, 0.0)
        h0 += fold_sum(ins.to(tl.float32), BLOCK_M, BLOCK_N)
        h1 += fold_sum(yz, BLOCK_M, BLOCK_N)
        if KIND == 2:
            h2 += fold_sum(yz * yz, BLOCK_M, BLOCK_N)
        # min |y| over every score (one min with an |.| operand): the nearest score to τ on either side
        h3 = tl.minimum(h3, fold_min(tl.abs(y), BLOCK_M, BLOCK_N))
    return h0, h1, h2, h3


@triton.jit
def _sweep_sums(q, k_base, kpm_row, start_m, offs_m, offs_n0, offs_d, Lq, Lk, skn, qk_scale, inv_a, tau, m_safe, thr,
                tmax_row, tlist, n_tiles, n_kblk, offs_g, D: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, RG: tl.constexpr, KIND: tl.constexpr, CAUSAL: tl.constexpr,
                HAS_KPM: tl.constexpr, PREC: tl.constexpr, KCHUNK: tl.constexpr, FIRST: tl.constexpr,
                NG: tl.constexpr):
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
                      Lq, Lk, kpm_row, BLOCK_M, BLOCK_N, CAUSAL, HAS_KPM)
        if FIRST:
            rel = group_reduce_max(tl.max(y, 1) + rel_shift, BLOCK_M, RG)
            tl.store(tmax_row + offs_g * n_kblk + tile, map_value(rel))
        h0, h1, h2, h3 = tile_sums(y, h0, h1, h2, h3, inv_a, KIND, BLOCK_M, BLOCK_N)
    return tl.sum(h0, 1), tl.sum(h1, 1), tl.sum(h2, 1), tl.min(h3, 1)


@triton.jit
def tau_step(c0, c1, c2, dmin, todo, tau, m, lo, hi_b, res, done, inv_a, KIND: tl.constexpr, W: tl.constexpr):
    """Accept the rows whose τ is exact and take the next iterate for the others (module docstring). W: how far
    below τ the sweep's tiles reach (scores in the tiles it skipped are at most τ - W), and so how far below τ a
    root may be accepted: 0 for sweep 0, whose τ is a lower bound. The iterate τ and the bracket are in score
    units; an accepted root goes to res as τ_root - m (m: the row maximum, 0 for rows without one), formed as
    (τ - m) + step: τ - m is exact, so the root keeps the precision of the step, not one ulp of |τ| (3e-5 at
    |τ| ~ 400, NOTES session 7)."""
    rel = tau - m
    if KIND == 3:
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
        # backward, GPU property test seed 32, session 14)
        inside_d = (-halley > lo - tau) & (-halley < hi_b - tau)
        res = tl.where(conv, tl.where(inside_d, rel - halley, rel), res)
        done = done | conv
        tau = tl.where(todo & ~conv, cand, tau)
    else:
        # closed form on S = {x > τ}, in units shifted by τ
        cnt = tl.maximum(c0, 1.0)
        if KIND == 1:
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
        if KIND == 1:
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
        # otherwise repeat sweeps until MAX_ITERS: run 16 saw 22-180 such rows per call keep 10 launches busy)
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
    Q, K, KPM, CU_Q, CU_K, ALPHA, M, TMAX, TAU, TAUMIN, LISTS, ST,
    sqb, sqh, sqn, skb, skh, skn, skpm, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale, sst,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, RG: tl.constexpr, MAX_ITERS: tl.constexpr, KCHUNK: tl.constexpr,
    FIRST: tl.constexpr, STATE: tl.constexpr, N_LOOP: tl.constexpr, W: tl.constexpr, SPLIT: tl.constexpr = 1,
):
    """The τ pass. Fused (FIRST, not STATE): sweep 0 and up to N_LOOP = MAX_ITERS - 1 further sweeps in one
    launch. Split (STATE): the iteration's per-row state (iterate, bracket, accepted root) is kept in ST
    (4 planes of sst floats) between launches: the launch with FIRST runs sweep 0, each later launch up to
    N_LOOP more sweeps for the blocks that still have unfinished rows (others only rewrite their results).
    A kernel with a loop over sweeps needs ~250 registers on sm_90, one sweep ~128: two programs per SM
    instead of one (NOTES run 14).
    SPLIT > 1: a program owns BLOCK_M // SPLIT rows of a tile-map block: it sweeps the tiles its own row groups
    need (their map rows, τ_min entries and its own slot of LISTS), so that the pass can run as smaller programs
    of the same per-thread work and a half block whose rows are done skips its sweeps."""
    pid, pid_m, sub = block_part(n_qblk, SPLIT, CAUSAL)
    BM: tl.constexpr = BLOCK_M // SPLIT
    pid_bh = tl.program_id(1)
    b, h, hk, qs, Lq, ks, Lk = program_ids(pid_bh, H, G, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    start_m = pid * BM
    if start_m < Lq:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, hi = query_block(
            Q, K, KPM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, BM, BLOCK_N,
            BLOCK_D, CAUSAL)
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
                                      m_safe, kpm_row, D, BM, BLOCK_N, CAUSAL, HAS_KPM, PREC)
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
                    c0, c1, c2, dmin = _sweep_sums(q, k_base, kpm_row, start_m, offs_m, offs_n0, offs_d, Lq, Lk,
                                                   skn, qk_scale, inv_a, tau, m_safe, thr, tmax_row, tlist, n_tiles,
                                                   n_kblk, offs_g, D, BM, BLOCK_N, RG, KIND, CAUSAL, HAS_KPM,
                                                   PREC, KCHUNK, True, NG)
                    tau, lo, hi_b, res, done = tau_step(c0, c1, c2, dmin, valid, tau, m_safe, lo, hi_b, res, done,
                                                        inv_a, KIND, 0.0)
            else:
                # a later launch of a split pass: the state the previous launch left
                tau, lo, hi_b, res, done = load_state(st, sst, rmask, valid)
            # later sweeps also visit the tiles up to W below τ (config.sweep_margin), so that a root up to W
            # below the iterate can be verified (tau_step); that admits few tiles more
            for it in range(0, N_LOOP):
                todo = valid & ~done
                n_todo = tl.sum(todo.to(tl.int32), 0)
                if n_todo > 0:
                    if not FIRST:  # a later split launch loads q only when its block has work left
                        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
                    thr = group_reduce_min(tl.where(todo, rel_thr(tau, m_safe) - W, INF), BM, RG)
                    c0, c1, c2, dmin = _sweep_sums(q, k_base, kpm_row, start_m, offs_m, offs_n0, offs_d, Lq, Lk, skn,
                                                   qk_scale, inv_a, tau, m_safe, thr, tmax_row, tlist, n_tiles,
                                                   n_kblk, offs_g, D, BM, BLOCK_N, RG, KIND, CAUSAL, HAS_KPM,
                                                   PREC, KCHUNK, False, NG)
                    tau, lo, hi_b, res, done = tau_step(c0, c1, c2, dmin, todo, tau, m_safe, lo, hi_b, res, done,
                                                        inv_a, KIND, W)
            if STATE:
                store_state(st, sst, rmask, tau, lo, hi_b, res)
            # τ - m: rows that hit MAX_ITERS keep the last iterate (accurate to rounding); every launch of a
            # split pass writes the results as they stand, so the last one leaves them final
            tau = tl.where(valid & ~done, tau - m_safe, res)
            tau = tl.where(valid, tau, INF)
            tau_min = group_reduce_min(tl.where(valid, rel_margin(tau), INF), BM, RG)
        tau = tl.where(m != m, float("nan"), tau)  # NaN / +inf scores: the row is NaN
        tl.store(TAU + stat_off + offs_m, tau, mask=rmask)
        tl.store(TAUMIN + taumin_off + offs_g, tau_min)
