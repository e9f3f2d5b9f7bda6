"""Pass 1: the one dense pass over the scores.

It sees every visible score once and writes, per query row, the row maximum
m_i, and per group of row_group (16) query rows and block_n keys the tile map:
the tile's maximum score, rounded up to bfloat16 (tiles.map_value). For entmax
τ_i >= m_i - 1 (x units), so a tile whose group maxima are all at most the
groups' min_i (m_i - 1) can never hold a nonzero and no later pass reads it;
pass 1 already drops (-inf) the tiles whose maxima lie more than 1 below the
running maximum of every row of the group.

For entmax it also keeps, per row, the four largest maxima of each of four
column subsets (those one thread holds, tiles.fold_max4): 16 different scores
whose threshold alone is a lower bound of τ_i (top_bound, top_bound_general),
at least m_i - 1 and on dense rows within ~0.01 of τ_i. The τ pass's first
sweep starts there and visits only the tiles above it (docs/design.md).
"""

import triton
import triton.language as tl

from .tiles import (
    fold_max4, group_reduce_max, head_alpha, insert4, load_cols, load_rows, map_value, mask_tile, max_nan,
    block_offsets, query_block, query_program, row_offset,
)


@triton.jit
def top_bound_general(m, vals, inv_a):
    """top_bound for any α (s = 1/(α-1) >= 1): Newton steps from m - 1 on h(τ) = (Σ (v - τ)_+^s)^(1/s) - 1 over
    the row's NV scores v. h is convex and decreasing in τ (a norm of the convex (v - τ)_+), so every Newton
    iterate from the left stays at or below the subproblem's root, itself a lower bound of τ; and h is close to
    linear (exactly, with one score above τ), so six steps reach that root to ~1e-7 (checked on the CPU for
    α 1.05-2) where Newton on Σ y^s - 1 needs many more (its far-left steps shrink the gap by only ~1/s)."""
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
def pass1_kernel(
    Q, K, KPM, AM, CU_Q, CU_K, ALPHA, M, TAU0, TMAX,
    sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h, sam_q, sam_k, wl, wr, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, RG: tl.constexpr, NEG_SCALE: tl.constexpr,
):
    """Row maxima (M), the tile map (TMAX) and, for entmax, the τ pass's lower bound (top_bound or
    top_bound_general, into TAU0) of one query block."""
    BM: tl.constexpr = BLOCK_M
    pid_m, sub, pid_bh, b, h, hk, qs, Lq, ks, Lk, start_m = query_program(H, G, CU_Q, CU_K, Nq, Nk, n_qblk, BM, 1,
                                                                          CAUSAL, IS_VARLEN)
    if start_m < Lq:
        qk_scale, inv_a, is_soft = head_alpha(ALPHA, h, scale, KIND)
        offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, am_row, lo, hi = query_block(
            Q, K, KPM, AM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h, wl, wr,
            BM, BLOCK_N, BLOCK_D, CAUSAL, WINDOW)
        q = load_rows(q_base, offs_m, offs_d, Lq, sqn, D)
        m = tl.full([BM], float("-inf"), tl.float32)
        NG: tl.constexpr = BM // RG
        offs_g = tl.arange(0, NG)
        # map rows of this program's NG row groups; tiles outside [lo, hi) (causal bound, window) keep the host's -inf
        map_off = block_offsets(pid_bh, pid_m, n_qblk, n_kblk, NG)[0]
        tmax_row = TMAX + map_off + offs_g * n_kblk
        # entmax kinds: each thread's four largest partial maxima (fold_max4: per tile, the maxima of four column
        # subsets, those of a thread in the MMA layout), (BM, 4) each: 16 different scores per row for top_bound
        BOUND: tl.constexpr = KIND != 0
        t1 = tl.full([BM, 4], float("-inf"), tl.float32)
        t2 = tl.full([BM, 4], float("-inf"), tl.float32)
        t3 = tl.full([BM, 4], float("-inf"), tl.float32)
        t4 = tl.full([BM, 4], float("-inf"), tl.float32)
        # the scale is applied to the row maxima of q·kᵀ, not to every score: fl(d·|s|) is monotone in d, so
        # fl(max_j d_j · |s|) = max_j fl(d_j · |s|) bit for bit, and with q negated (exact) for s < 0 the
        # products equal fl(d · s), the scores every other kernel computes. -inf (masked) stays -inf
        # (also for s = 0); NaN stays NaN. NEG_SCALE (scale < 0, known on the host: α - 1 >= 0 as documented,
        # α = 1 heads use log2 e) is its own variant: negating q in registers makes the dot take it from
        # registers, which costs the common case 8 registers and spills under the 64-register cap.
        if NEG_SCALE:
            q = -q
        s_abs = tl.abs(qk_scale)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + offs_n0
            kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
            d = mask_tile(tl.dot(q, kT, input_precision=PREC), start_m, start_n, offs_m, offs_n, Lq, Lk, kpm_row,
                          am_row, sam_q, sam_k, wl, wr, BM, BLOCK_N, CAUSAL, HAS_KPM, HAS_MASK, WINDOW)
            # NaN-propagating maxima: a NaN score makes its row NaN, and its tile map entry +inf
            # (map_value: the tile's true maximum is unknown, so it stays a candidate for the group)
            if BOUND:
                pm = fold_max4(d, BM, BLOCK_N)
                xm = tl.reduce(pm, 1, max_nan)
                pv = tl.where(pm > float("-inf"), pm * s_abs, pm)
                # insert pv into (t1, ..., t4). A NaN (only in a NaN row, whose bound the τ pass ignores) is not
                # inserted, but can repeat an entry one level down
                t1, t2, t3, t4, _ = insert4(t1, t2, t3, t4, pv)
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
            NV: tl.constexpr = 16
            vals = tl.reshape(tl.join(tl.join(t1, t2), tl.join(t3, t4)), (BM, NV))
            if KIND == 3:
                lb = top_bound_general(m, vals, inv_a)
            else:
                lb = top_bound(m, vals, KIND, NV)
            tl.store(TAU0 + stat, lb, mask=offs_m < Lq)


