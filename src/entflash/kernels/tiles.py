"""Shared @triton.jit helpers of every pass: sequence bounds, score masking, probabilities, tile lists.

Units: every kernel works with x = c·(q·k)·scale, where c = α-1 for entmax
(so p = [x - τ]_+^(1/(α-1)) and τ is in the user-facing units of docs/design.md)
and c = log2(e) for softmax (p = 2^(x - τ2), τ2 the log2-sum-exp; the API
converts it back to natural-log units). log2(e) = 1.4426950408889634 is
written inline: plain Python globals are not visible inside @triton.jit.
The τ pass stores τ - m (m: the row maximum of x, pass 1), and the passes
after it work with x - m and τ - m (score_tile, row_max); the API adds m
back for return_stats.
"""

import triton
import triton.language as tl

@triton.jit
def seq_bounds(b, CU_Q, CU_K, Nq, Nk, IS_VARLEN: tl.constexpr):
    """(first row, length) of the query and key sequences of batch entry b."""
    if IS_VARLEN:
        qs = tl.load(CU_Q + b)
        lq = tl.load(CU_Q + b + 1) - qs
        ks = tl.load(CU_K + b)
        lk = tl.load(CU_K + b + 1) - ks
    else:
        qs = b * 0
        lq = b * 0 + Nq
        ks = b * 0
        lk = b * 0 + Nk
    return qs, lq, ks, lk


@triton.jit
def query_block_id(n_qblk, CAUSAL: tl.constexpr):
    """The query block of this program. Causal: the last blocks first: they see the most keys, and a grid
    that starts the longest programs last ends on a tail of them (each split τ launch pays that tail)."""
    if CAUSAL:
        return n_qblk - 1 - tl.program_id(0)
    else:
        return tl.program_id(0)


@triton.jit
def block_part(n_qblk, SPLIT: tl.constexpr, CAUSAL: tl.constexpr):
    """A query-block program's place when each tile-map block runs as SPLIT programs (a KernelOptions split): its
    index among the n_qblk · SPLIT parts (its rows start at that index times BLOCK_M // SPLIT), its tile-map
    block and its part of that block (block_offsets)."""
    pid = query_block_id(n_qblk * SPLIT, CAUSAL)
    return pid, pid // SPLIT, pid % SPLIT


@triton.jit
def query_program(H, G, CU_Q, CU_K, Nq, Nk, n_qblk, BM: tl.constexpr, SPLIT: tl.constexpr, CAUSAL: tl.constexpr,
                  IS_VARLEN: tl.constexpr):
    """Where a query-block program (pass 1, τ, output, dq) stands: (its tile-map block, its part of that block
    (block_part), the (batch, head) index, b, h, kv head, first query row, query length, first key row, key
    length, and its first row within the sequence, start_m). Its rows are start_m + arange(BM); a program with
    start_m >= the query length has nothing to do."""
    pid, pid_m, sub = block_part(n_qblk, SPLIT, CAUSAL)
    pid_bh = tl.program_id(1)
    b, h, hk, qs, Lq, ks, Lk = program_ids(pid_bh, H, G, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    return pid_m, sub, pid_bh, b, h, hk, qs, Lq, ks, Lk, pid * BM


@triton.jit
def program_ids(pid_bh, H, G, CU_Q, CU_K, Nq, Nk, IS_VARLEN: tl.constexpr):
    """(b, h, kv head, first query row, query length, first key row, key length) of a (batch, head) program."""
    b = pid_bh // H
    h = pid_bh % H
    qs, lq, ks, lk = seq_bounds(b, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    return b, h, h // G, qs, lq, ks, lk


@triton.jit
def row_offset(b, h, start, sb, sh, sn):
    """int64 element offset of row `start` of head h of batch entry b."""
    return b.to(tl.int64) * sb + h.to(tl.int64) * sh + start.to(tl.int64) * sn


@triton.jit
def head_alpha(ALPHA, h, scale, KIND: tl.constexpr):
    """(qk_scale, 1/(α-1), is_softmax) for head h; qk_scale = scale·c (see module doc)."""
    if KIND == 0:
        qk_scale = scale * 1.4426950408889634
        inv_a = scale * 0.0 + 1.0
        is_soft = True
    elif KIND == 1:
        qk_scale = scale
        inv_a = scale * 0.0 + 1.0
        is_soft = False
    elif KIND == 2:
        qk_scale = scale * 0.5
        inv_a = scale * 0.0 + 2.0
        is_soft = False
    else:
        a = tl.load(ALPHA + h).to(tl.float32) - 1.0
        is_soft = a == 0.0
        qk_scale = scale * tl.where(is_soft, 1.4426950408889634, a)
        inv_a = 1.0 / tl.where(is_soft, 1.0, a)
    return qk_scale, inv_a, is_soft


@triton.jit
def causal_hi(start_m, Lq, Lk, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """One past the last key any row of this query block can see."""
    if CAUSAL:
        hi = tl.minimum(Lk, start_m + BLOCK_M + Lk - Lq)
        hi = tl.maximum(hi, 0)
    else:
        hi = Lk
    return hi


@triton.jit
def key_range(start_m, Lq, Lk, wl, wr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
              WINDOW: tl.constexpr):
    """(lo, hi): the keys any row of this query block can see lie in [lo, hi), lo a multiple of BLOCK_N. A window
    (left wl, right wr, bottom-right aligned) bounds both sides: the block's first row sees nothing below
    start_m + Lk - Lq - wl, its last nothing above start_m + BLOCK_M - 1 + Lk - Lq + wr."""
    hi = causal_hi(start_m, Lq, Lk, BLOCK_M, CAUSAL)
    lo = hi * 0
    if WINDOW:
        lo = tl.maximum(start_m + (Lk - Lq) - wl, 0) // BLOCK_N * BLOCK_N
        hi = tl.maximum(tl.minimum(hi, start_m + BLOCK_M + (Lk - Lq) + wr), lo)
    return lo, hi


@triton.jit
def mask_scores(s, offs_m, offs_n, Lq, Lk, KPM_ROW, AM_ROW, sam_q, sam_k, wl, wr, CAUSAL: tl.constexpr,
                HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr):
    """-inf where the key is not visible to the row (padding rows/keys, causal, key padding mask, window, mask)."""
    return mask_scores_b(s, offs_m[:, None], offs_n[None, :], Lq, Lk, KPM_ROW, AM_ROW, sam_q, sam_k, wl, wr, CAUSAL,
                         HAS_KPM, HAS_MASK, WINDOW)


@triton.jit
def mask_scores_b(s, rows, keys, Lq, Lk, KPM_ROW, AM_ROW, sam_q, sam_k, wl, wr, CAUSAL: tl.constexpr,
                  HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr):
    """mask_scores with the query rows and keys given as broadcastable 2-D indices: (M, 1) and (1, N) for a
    (rows, keys) tile, (1, M) and (N, 1) for its transpose (the dk/dv kernel's k·qᵀ). The visibility context:
    KPM_ROW the batch entry's key padding row (HAS_KPM), AM_ROW the (batch, head)'s attn_mask base with strides
    sam_q, sam_k (HAS_MASK), and the window's bounds wl, wr (WINDOW; 2^30 for an unbounded side)."""
    # one compare per score against a per-row key limit (rows past Lq: 0, nothing visible), not three predicates
    # joined per score: the compiler turned those into one select per predicate (sm_90 SASS of the dk/dv loop:
    # ~3.5 FSEL per score; docs/performance.md). Causal: a row r < Lq sees keys <= r + Lk - Lq <= Lk - 1, so the
    # key bound Lk is implied.
    if CAUSAL:
        lim = tl.where(rows < Lq, rows + (Lk - Lq + 1), 0)
    else:
        lim = tl.where(rows < Lq, Lk, 0)
    valid = keys < lim
    if WINDOW:
        d = rows + (Lk - Lq)
        valid = valid & (keys >= d - wl) & (keys <= d + wr)
    if HAS_KPM:
        kp = tl.load(KPM_ROW + keys, mask=keys < Lk, other=0)
        valid = valid & (kp != 0)
    if HAS_MASK:
        am = tl.load(AM_ROW + rows.to(tl.int64) * sam_q + keys.to(tl.int64) * sam_k, mask=valid, other=0)
        valid = valid & (am != 0)
    return tl.where(valid, s, float("-inf"))


@triton.jit
def needs_mask(start_m, start_n, Lq, Lk, wl, wr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr):
    """Whether tile (start_m, start_n) has an invisible entry: a ragged edge, the causal diagonal, a window's
    edge, a padding mask or an attn_mask.

    Interior tiles skip mask_scores and its several compares and selects per
    score (the sweeps are bound by such per-score work).
    """
    edge = (start_n + BLOCK_N > Lk) | (start_m + BLOCK_M > Lq)
    if CAUSAL:
        edge = edge | (start_n + BLOCK_N - 1 > start_m + (Lk - Lq))
    if WINDOW:
        edge = edge | (start_n < start_m + BLOCK_M - 1 + (Lk - Lq) - wl)
        edge = edge | (start_n + BLOCK_N - 1 > start_m + (Lk - Lq) + wr)
    if HAS_KPM:
        edge = edge | True
    if HAS_MASK:
        edge = edge | True
    return edge


@triton.jit
def mask_tile(s, start_m, start_n, offs_m, offs_n, Lq, Lk, KPM_ROW, AM_ROW, sam_q, sam_k, wl, wr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
              HAS_MASK: tl.constexpr, WINDOW: tl.constexpr):
    """A (rows, keys) tile of values s with invisible keys at -inf; the test runs only on tiles that need it
    (needs_mask). Callers apply it after their own elementwise transform of q·kᵀ (scale, - τ)."""
    if needs_mask(start_m, start_n, Lq, Lk, wl, wr, BLOCK_M, BLOCK_N, CAUSAL, HAS_KPM, HAS_MASK, WINDOW):
        s = mask_scores(s, offs_m, offs_n, Lq, Lk, KPM_ROW, AM_ROW, sam_q, sam_k, wl, wr, CAUSAL, HAS_KPM, HAS_MASK,
                        WINDOW)
    return s


@triton.jit
def score_tile(q, k_base, start_m, start_n, offs_m, offs_n, offs_d, Lq, Lk, skn, qk_scale, m, KPM_ROW, AM_ROW,
               sam_q, sam_k, wl, wr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
               PREC: tl.constexpr):
    """Load K^T for keys offs_n (= start_n + arange) and return (kT, masked scores relative to the row maxima m,
    x - m) of the tile: one fused multiply-add per score, so x - m keeps the precision of its own ulps where x
    and m are large (see row_max)."""
    kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
    # the mask test before the dot, not inside mask_tile after it: that order is what the dq kernel's SASS
    # (and its measured times) come from
    nm = needs_mask(start_m, start_n, Lq, Lk, wl, wr, BLOCK_M, BLOCK_N, CAUSAL, HAS_KPM, HAS_MASK, WINDOW)
    x = tl.dot(q, kT, input_precision=PREC) * qk_scale - m[:, None]
    if nm:
        x = mask_scores(x, offs_m, offs_n, Lq, Lk, KPM_ROW, AM_ROW, sam_q, sam_k, wl, wr, CAUSAL, HAS_KPM, HAS_MASK,
                        WINDOW)
    return kT, x


@triton.jit
def dropout_keep(SEED, bh, rows, keys, NQd, NKd, thresh):
    """Which weights dropout keeps (entflash/dropout.py: Philox-4x32-10 at the score's coordinate
    ((b·H + h)·NQd + row)·NKd + key, kept when the word is >= thresh); rows and keys as broadcastable indices."""
    off = (bh.to(tl.int64) * NQd + rows.to(tl.int64)) * NKd + keys.to(tl.int64)
    word = tl.randint(tl.load(SEED), off).to(tl.uint32, bitcast=True).to(tl.int64)
    return word >= thresh


@triton.jit
def fold_sum(v, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_M, BLOCK_N) -> (BLOCK_M, BLOCK_N // 4): each output column sums four input columns.

    Loops accumulate per-row sums in such quarter tiles and reduce across columns once after the loop:
    a per-tile row reduction (shuffles between threads) cost ~0.6 ms per dense D64 N16k sweep on the
    H200 against ~0.14 ms for an elementwise accumulation (docs/performance.md).
    Both folds stay inside a thread in the MMA layout: first adjacent column pairs (2c, 2c+1), then
    columns c and c + BLOCK_N // 4 of the half tile, which one thread also holds together. A quarter
    tile costs a quarter of the registers of a full accumulator tile: the τ kernel's four accumulators
    must leave it at <= 128 registers (two 8-warp programs per SM)."""
    a, b = tl.split(tl.reshape(v, (BLOCK_M, BLOCK_N // 2, 2)))
    c, d = tl.split(tl.permute(tl.reshape(a + b, (BLOCK_M, 2, BLOCK_N // 4)), (0, 2, 1)))
    return c + d


@triton.jit
def fold_min(v, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """As fold_sum, with minima."""
    a, b = tl.split(tl.reshape(v, (BLOCK_M, BLOCK_N // 2, 2)))
    c, d = tl.split(tl.permute(tl.reshape(tl.minimum(a, b), (BLOCK_M, 2, BLOCK_N // 4)), (0, 2, 1)))
    return tl.minimum(c, d)


@triton.jit
def max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def fold_max4(v, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_M, BLOCK_N) -> (BLOCK_M, 4): NaN-propagating maxima of four column subsets, output column t over
    the columns c with (c // 2) % 4 == t. In the MMA layout those are the columns one thread of a quad holds
    (pairs 2c', 2c'+1 with c' = 4j + t), so, like fold_sum, nothing leaves a thread: four partial row maxima
    per tile at the price of the in-thread half of a row reduction."""
    a, b = tl.split(tl.reshape(v, (BLOCK_M, BLOCK_N // 2, 2)))
    w = tl.reshape(max_nan(a, b), (BLOCK_M, BLOCK_N // 8, 4))
    return tl.reduce(w, 1, max_nan)


@triton.jit
def insert4(t1, t2, t3, t4, pv):
    """Insert pv into the descending lists (t1 >= t2 >= t3 >= t4) elementwise; also returns the value that falls
    off the end (for a deeper list). A NaN is not inserted, but can repeat an entry one level down."""
    lo1 = tl.minimum(t1, pv)
    t1 = tl.maximum(t1, pv)
    lo2 = tl.minimum(t2, lo1)
    t2 = tl.maximum(t2, lo1)
    lo3 = tl.minimum(t3, lo2)
    t3 = tl.maximum(t3, lo2)
    out = tl.minimum(t4, lo3)
    t4 = tl.maximum(t4, lo3)
    return t1, t2, t3, t4, out


@triton.jit
def group_reduce_max(v, BLOCK_M: tl.constexpr, RG: tl.constexpr):
    """Maxima of consecutive groups of RG entries of a (BLOCK_M,) vector: (BLOCK_M // RG,)."""
    return tl.max(tl.reshape(v, (BLOCK_M // RG, RG)), 1)


@triton.jit
def group_reduce_min(v, BLOCK_M: tl.constexpr, RG: tl.constexpr):
    """Minima of consecutive groups of RG entries of a (BLOCK_M,) vector: (BLOCK_M // RG,)."""
    return tl.min(tl.reshape(v, (BLOCK_M // RG, RG)), 1)


@triton.jit
def probs(x, tau, inv_a, is_soft, KIND: tl.constexpr):
    """Unnormalized probabilities from scores x (rows) and thresholds tau (per row)."""
    return probs_y(x - tau[:, None], inv_a, is_soft, KIND)


@triton.jit
def probs_y(y, inv_a, is_soft, KIND: tl.constexpr):
    """Unnormalized probabilities from y = x - τ (any orientation)."""
    if KIND == 0:
        p = tl.exp2(y)
    elif KIND == 1:
        p = tl.maximum(y, 0.0)
    elif KIND == 2:
        y = tl.maximum(y, 0.0)
        p = y * y
    else:
        # a per-head α: one uniform branch per tile on the head's α, so that heads of exactly 1.5 or 2 skip the
        # powers (their scores are in the same units as those kinds')
        if is_soft:
            p = tl.exp2(y)
        elif inv_a == 2.0:
            y = tl.maximum(y, 0.0)
            p = y * y
        elif inv_a == 1.0:
            p = tl.maximum(y, 0.0)
        else:
            # log2(0) = -inf and inv_a > 0, so y = 0 gives exp2(-inf) = 0
            p = tl.exp2(tl.log2(tl.maximum(y, 0.0)) * inv_a)
    return p


@triton.jit
def log2_fine(y):
    """log2 of y > 0 within a few float32 ulps of the result also near y = 1, whatever tl.log2 lowers to. The
    hardware's lg2.approx.f32 is off by up to 2^-22.6 in absolute terms on [0.5, 2), a large relative error
    where log2 y is small, which a per-head α's gradient multiplies by 1/(α-1)². (Triton lowers tl.log2 on
    sm_90 to libdevice's log2f, ~1 ulp, not to lg2.approx; this guards the interpreter
    emulation and other lowerings.) On [0.5, 2): ln y = 2 atanh(s), s = (y - 1)/(y + 1) in [-1/3, 1/3), by
    its odd series to s^13 (truncation below 1.5e-8 relative), with y - 1 exact and one division; elsewhere a
    relative error of 2^-22 is already fine."""
    s = (y - 1.0) / (y + 1.0)
    s2 = s * s
    poly = 1.0 / 11.0 + s2 * (1.0 / 13.0)
    poly = 1.0 / 9.0 + s2 * poly
    poly = 1.0 / 7.0 + s2 * poly
    poly = 1.0 / 5.0 + s2 * poly
    poly = 1.0 / 3.0 + s2 * poly
    poly = 1.0 + s2 * poly
    near = (y >= 0.5) & (y < 2.0)
    return tl.where(near, s * poly * 2.8853900817779268, tl.log2(y))  # 2 / ln 2


@triton.jit
def dalpha_probs(x, tau, inv_a, is_soft):
    """(y, p, u, ln p) of a tile for a per-head α's gradient (general kind, rows = queries): y = x - τ, p and
    u = p^(2-α) as grad_terms gives them but from log2_fine, and ln p (0 off the support). Softmax heads: y is
    in log2 units, p = 2^y, u = p."""
    y = x - tau[:, None]
    l2y = log2_fine(tl.maximum(y, 1e-30))
    l2p = tl.where(is_soft, y, l2y * inv_a)
    e = tl.exp2(l2p)
    p = tl.where(is_soft, e, tl.where(y > 0, e, 0.0))  # softmax: masked y = -inf gives 0
    u = tl.where(is_soft, p, tl.where(y > 0, tl.exp2(l2y * (inv_a - 1.0)), 0.0))
    lp = tl.where(p > 0, l2p * 0.6931471805599453, 0.0)
    return y, p, u, lp


@triton.jit
def grad_weights(p, x, tau, inv_a, is_soft, KIND: tl.constexpr):
    """u = p^(2-α) on the support (softmax: u = p), the weights of the entmax Jacobian."""
    return grad_weights_y(p, x - tau[:, None], inv_a, is_soft, KIND)


@triton.jit
def grad_weights_y(p, y, inv_a, is_soft, KIND: tl.constexpr):
    """grad_weights from p and y = x - τ (any orientation)."""
    if KIND == 0:
        u = p
    elif KIND == 1:
        u = tl.where(y > 0, 1.0, 0.0)
    elif KIND == 2:
        u = tl.maximum(y, 0.0)
    else:
        if is_soft:
            u = p
        elif inv_a == 2.0:
            u = tl.maximum(y, 0.0)
        elif inv_a == 1.0:
            u = tl.where(y > 0, 1.0, 0.0)
        else:
            # p^(2-α) = y^((2-α)/(α-1)) = y^(inv_a - 1)
            u = tl.where(y > 0, tl.exp2(tl.log2(tl.maximum(y, 1e-30)) * (inv_a - 1.0)), 0.0)
    return u


@triton.jit
def grad_terms(x, do, vT, tau, inv_a, is_soft, KIND: tl.constexpr, PREC: tl.constexpr):
    """(p, u, g) of a tile for the backward: probabilities, Jacobian weights and g = dO·V^T."""
    p = probs(x, tau, inv_a, is_soft, KIND)
    u = grad_weights(p, x, tau, inv_a, is_soft, KIND)
    g = tl.dot(do, vT, input_precision=PREC)
    return p, u, g


@triton.jit
def load_rows(PTR, offs_m, offs_d, Lq, stride_n, D: tl.constexpr):
    """A (BLOCK_M, BLOCK_D) tile of a row-major [row, d] operand (rows past Lq, cols past D → 0)."""
    return tl.load(PTR + offs_m[:, None].to(tl.int64) * stride_n + offs_d[None, :],
                   mask=(offs_m[:, None] < Lq) & (offs_d[None, :] < D), other=0.0)


@triton.jit
def load_cols(PTR, offs_n, offs_d, Lk, stride_n, D: tl.constexpr):
    """The transpose, (BLOCK_D, BLOCK_N), of a [row, d] tile: K^T or V^T for a dot."""
    return tl.load(PTR + offs_n[None, :].to(tl.int64) * stride_n + offs_d[:, None],
                   mask=(offs_n[None, :] < Lk) & (offs_d[:, None] < D), other=0.0)


@triton.jit
def block_offsets(pid_bh, pid_m, n_qblk, n_kblk, NG: tl.constexpr, SPLIT: tl.constexpr = 1, sub=0):
    """int64 offsets, for part `sub` of the SPLIT equal parts of query block pid_m of (batch, head) pid_bh (the
    whole block when SPLIT = 1; block_part), of its first tile-map row (it owns NG rows of n_kblk entries, one per
    row group), of its NG τ_min entries and of its tile list (n_kblk entries; SPLIT lists per block)."""
    blk = pid_bh.to(tl.int64) * n_qblk + pid_m
    map_off = blk * (NG * SPLIT) * n_kblk + sub * NG * n_kblk
    return map_off, blk * (NG * SPLIT) + sub * NG, (blk * SPLIT + sub) * n_kblk


@triton.jit
def map_value(v):
    """A tile map entry: v rounded up to bfloat16 (never below v; NaN becomes +inf).

    The map only has to bound the scores from above, so rounding up keeps
    every test conservative while halving its memory. A NaN maximum (NaN
    scores) is unknown, so the tile must stay a candidate: +inf.
    """
    v = tl.where(v != v, float("inf"), v)
    b = v.to(tl.bfloat16, fp_downcast_rounding="rtz")
    bits = b.to(tl.int16, bitcast=True)
    # round-toward-zero only rounds positive values down; step those up by one ulp
    bits = tl.where(b.to(tl.float32) < v, bits + 1, bits)
    return bits.to(tl.bfloat16, bitcast=True)


@triton.jit
def tile_list(MAP, s_ent, s_grp, THR, t_ent, t_grp, thr, n, LIST, clear, KCHUNK: tl.constexpr, NG: tl.constexpr,
              PER_ENTRY_THR: tl.constexpr):
    """Compact list of the tiles that may hold a nonzero.

    Entry j < n is kept when, for some row group g < NG, the tile map value
    MAP[j * s_ent + g * s_grp] exceeds the group's threshold: thr[g] (a (NG,)
    vector), or THR[j * t_ent + g * t_grp] with PER_ENTRY_THR (thr unused). The kept
    indices go to LIST[0:count] in increasing order; returns count. With
    `clear`, the map entries of dropped tiles are set to -inf (the τ pass
    rewrites the map in row-relative units; a dropped tile never holds a
    nonzero). Barriers make earlier map writes visible before the loads and
    the list visible to every thread before it is read; the loops over the
    list then pipeline their loads like dense loops.
    """
    tl.debug_barrier()
    count = n * 0
    offs_g = tl.arange(0, NG)
    for c in range(0, n, KCHUNK):
        offs = c + tl.arange(0, KCHUNK)
        inb = offs < n
        ent = offs.to(tl.int64)[:, None]
        ptrs = MAP + ent * s_ent + offs_g[None, :] * s_grp
        vals = tl.load(ptrs, mask=inb[:, None], other=float("-inf")).to(tl.float32)
        if PER_ENTRY_THR:
            th = tl.load(THR + ent * t_ent + offs_g[None, :] * t_grp, mask=inb[:, None], other=float("inf"))
            hit = vals > th
        else:
            hit = vals > thr[None, :]
        keep = inb & (tl.max(hit.to(tl.int32), 1) > 0)
        if clear:
            # only entries already judged dropped are written, so a racing load of one still drops it
            neg = tl.full([KCHUNK, NG], float("-inf"), tl.float32).to(MAP.dtype.element_ty)
            tl.store(ptrs, neg, mask=(inb & ~keep)[:, None])
        k32 = keep.to(tl.int32)
        pos = count + tl.cumsum(k32, 0) - 1
        tl.store(LIST + pos, offs, mask=keep)
        count += tl.sum(k32, 0)
    tl.debug_barrier()
    return count


@triton.jit
def block_tile_list(MAP_ROW, n_kblk, thr, n_tiles, LIST, clear, KCHUNK: tl.constexpr, NG: tl.constexpr):
    """tile_list over one query block's NG map rows (MAP_ROW: the first), with thresholds thr per row group."""
    return tile_list(MAP_ROW, 1, n_kblk, MAP_ROW, 0, 0, thr, n_tiles, LIST, clear, KCHUNK, NG, False)


@triton.jit
def query_block(Q, K, KPM, AM, b, h, hk, qs, ks, start_m, Lq, Lk, sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h,
                wl, wr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                WINDOW: tl.constexpr):
    """What every query-block program (pass 1, τ, output, dq) starts from: (offs_m, offs_n0, offs_d, the q and
    k base pointers, the key-padding row, the attn_mask base of this (batch, head), and [lo, hi): the keys the
    block can see lie there, key_range). The caller loads its q tile (load_rows) where it needs it: where that
    load sits changes the generated code."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + row_offset(b, h, qs, sqb, sqh, sqn)
    k_base = K + row_offset(b, hk, ks, skb, skh, skn)
    kpm_row = KPM + b.to(tl.int64) * skpm
    am_row = AM + b.to(tl.int64) * sam_b + h.to(tl.int64) * sam_h
    lo, hi = key_range(start_m, Lq, Lk, wl, wr, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
    return offs_m, offs_n0, offs_d, q_base, k_base, kpm_row, am_row, lo, hi


@triton.jit
def safe_max(m):
    """The row maximum m as every kernel subtracts it (the τ pass stores τ - safe_max(m), the later passes
    subtract it from the scores): 0 for rows without a visible key (m = -inf; their τ is +inf) and for NaN rows
    (τ NaN), so that x - m never makes a NaN of its own."""
    return tl.where(m > float("-inf"), m, 0.0)


@triton.jit
def row_max(M, offs, mask):
    """safe_max of pass 1's row maxima at offs, for the passes after the τ pass.

    Scores are used relative to m, and the τ pass stores τ - m: at |τ| ~ 400 (large scales) one float32 ulp of
    an absolute τ is 3e-5, an error in every p that misses the tolerance rule (docs/design.md, "Precision")."""
    return safe_max(tl.load(M + offs, mask=mask, other=0.0))


@triton.jit
def visited_tiles(TAU, M, TMAX, TAUMIN, LISTS, stat_off, offs_m, rmask, pid_bh, pid_m, n_qblk, n_kblk, hi,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RG: tl.constexpr, KCHUNK: tl.constexpr,
                  SPLIT: tl.constexpr = 1, sub=0):
    """After the τ pass: the block's τ - m and m per row (row_max), and the list (pointer, count) of the tiles
    the output and dq passes visit: those whose row-relative map entry exceeds τ_min of some row group.
    SPLIT > 1: the program owns part `sub` of SPLIT equal parts of query block pid_m (offs_m its rows, hi its
    causal bound), judges the tiles by its own row groups only and writes its list to its own slot of LISTS
    (SPLIT slots per block)."""
    tau = tl.load(TAU + stat_off + offs_m, mask=rmask, other=float("inf"))
    m = row_max(M, stat_off + offs_m, rmask)
    NG: tl.constexpr = BLOCK_M // RG // SPLIT  # this program's row groups
    map_off, taumin_off, list_off = block_offsets(pid_bh, pid_m, n_qblk, n_kblk, NG, SPLIT, sub)
    thr = tl.load(TAUMIN + taumin_off + tl.arange(0, NG))
    tlist = LISTS + list_off
    count = block_tile_list(TMAX + map_off, n_kblk, thr, tl.cdiv(hi, BLOCK_N), tlist, False, KCHUNK, NG)
    return tau, m, tlist, count

