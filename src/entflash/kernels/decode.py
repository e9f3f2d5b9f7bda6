"""The decode path: a forward for few query rows per KV head (one new token, or a handful, against a cache).

The query-block pipeline (pass 1, τ sweeps, output) is built for long query
blocks: with one query row per head it runs 128-row tiles that hold one row,
reads K once per query head of a GQA group and again in every τ sweep and in
the output pass. Decoding is bound by reading the cache, so this path reads K
exactly once and V only where a weight is nonzero:

1. `decode_scores_kernel`, one program per (key span, batch · KV head): the
   G·Nq query rows of the KV head's group (G query heads, Nq new tokens; at
   most KernelOptions.decode_rows) as one small tile, dotted with every key
   tile of the span. It stores the scaled, masked scores x (float32) and each
   block_n-key chunk's maximum per row. The scores are 4 bytes per row and key
   against 2·D bytes of K per key, so at G·Nq ≤ 16 rows and D ≥ 64 this
   scratch is at most half the cache's size.
2. `decode_tau_kernel`, one program per query row: the row maximum m from
   the chunk maxima; τ from below, starting at (α-1)·m - 1 (a lower bound: the
   maximum alone contributes 1), visiting only chunks whose maximum lies above
   the current τ (on sparse rows a few chunks of the whole cache).
3. `decode_apply_kernel`, shaped like kernel 1: per (key span, batch · KV
   head), the weights p of all the group's rows for one key tile at a time
   (tiles where no row's chunk maximum lies above its τ are skipped), one tile
   of V loaded only for keys that some row weights, and p·V as one matrix
   product; the span's partial Σ p v, Σ p and support size per row. A row's
   support on dense inputs spans the whole cache, and an output loop per row
   over its chunks waited on one dependent load after another
   (docs/performance.md).
4. `decode_finish_kernel`, one program per query row: the spans added, the
   output normalised by the sum of its weights.

τ, with z = (α-1)·x, y = z - τ and f(τ) = Σ y_+^(1/(α-1)) - 1 (convex and
decreasing in τ for α ≤ 2): Newton's method from below never overshoots and
rises monotonically to the root. For α = 2 its step is the closed form on the
current support (Michelot's iteration). For α = 1.5 each sweep also solves the
quadratic Σ_S (y - t)² = 1 on the current support S and accepts its root when
it lies below every member's y (the support is then the same at the root, so
the root is exact up to float32 rounding of the sums). Other α stop when the
Newton step is below 2e-7 of max(1, |τ|) and take that last step. α = 1 rows
(of a per-head tensor) are softmax: τ = m + log Σ exp(x - m).
"""

import triton
import triton.language as tl

from .tiles import seq_bounds

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _span_program(H, NQ, NK, G, CU_Q, CU_K, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, SPAN_TILES: tl.constexpr,
                  IS_VARLEN: tl.constexpr):
    """What a (key span, batch · KV head) program covers: (b, KV head, first query row, query length, first key
    row, key length, first key of the span) and, per row r of its tile, the token i = r % NQ, the query head
    h = hk·G + r // NQ, the scratch row ((b·H + h)·NQ + i) and whether the row exists."""
    pid_s = tl.program_id(0)
    bh = tl.program_id(1)
    Hkv = H // G
    b = bh // Hkv
    hk = bh % Hkv
    q0, nq, k0, nk = seq_bounds(b, CU_Q, CU_K, NQ, NK, IS_VARLEN)
    start = pid_s * (SPAN_TILES * BLOCK_N)
    r = tl.arange(0, BLOCK_R)
    g = r // NQ
    i = r % NQ
    rows_ok = (g < G) & (i < nq)
    h = hk * G + g
    srow = ((b * H + h) * NQ + i).to(tl.int64)
    return b, hk, q0, nq, k0, nk, start, i, h, srow, rows_ok


@triton.jit
def decode_scores_kernel(
    Q, K, X, CMAX, KPM, CU_Q, CU_K,
    sqb, sqh, sqn, skb, skh, skn, skpm,
    H, NQ, NK, NKP, NCH, G, scale, wl, wr,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    SPAN_TILES: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Scores of one KV head's query rows against one span of SPAN_TILES · BLOCK_N keys (module docstring).

    Row r of the tile is query head hk·G + r // NQ, token r % NQ; its scratch row is ((b·H + h)·NQ + i), NKP
    scores long, with NCH chunk maxima. NaN or +inf among a chunk's visible scores makes its maximum NaN."""
    b, hk, q0, nq, k0, nk, start, i, h, srow, rows_ok = _span_program(H, NQ, NK, G, CU_Q, CU_K, BLOCK_R, BLOCK_N,
                                                                      SPAN_TILES, IS_VARLEN)
    offs_d = tl.arange(0, BLOCK_D)
    q_ptr = Q + b.to(tl.int64) * sqb + h.to(tl.int64)[:, None] * sqh + (q0 + i).to(tl.int64)[:, None] * sqn \
        + offs_d[None, :]
    q = tl.load(q_ptr, mask=rows_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    # the keys each row sees: bottom-right aligned causal bound and window (docs/design.md)
    diag = i + nk - nq
    lo = tl.zeros([BLOCK_R], tl.int32)
    hi = tl.zeros([BLOCK_R], tl.int32) + nk - 1
    if CAUSAL:
        hi = tl.minimum(hi, diag)
    if WINDOW:
        lo = tl.maximum(lo, diag - wl)
        hi = tl.minimum(hi, diag + wr)
    hi = tl.where(rows_ok, hi, -1)
    k_base = K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh + k0.to(tl.int64) * skn
    n_tiles = tl.minimum(SPAN_TILES, tl.cdiv(nk - start, BLOCK_N))
    for t in range(0, n_tiles):
        offs_n = start + t * BLOCK_N + tl.arange(0, BLOCK_N)
        kv_ok = offs_n < nk
        kt = tl.load(k_base + offs_n.to(tl.int64)[None, :] * skn + offs_d[:, None],
                     mask=kv_ok[None, :] & (offs_d[:, None] < D), other=0.0)
        s = tl.dot(q, kt, input_precision=PREC) * scale
        vis = (offs_n[None, :] >= lo[:, None]) & (offs_n[None, :] <= hi[:, None])
        if HAS_KPM:
            keep = tl.load(KPM + b * skpm + offs_n, mask=kv_ok, other=0)
            vis = vis & (keep != 0)[None, :]
        x = tl.where(vis, s, NEG_INF)
        bad = tl.sum(((s != s) | (s == float("inf"))) & vis, 1) > 0
        cm = tl.where(bad, float("nan"), tl.max(x, 1))
        tl.store(X + srow[:, None] * NKP + offs_n[None, :], x, mask=rows_ok[:, None] & kv_ok[None, :])
        tl.store(CMAX + srow * NCH + (start // BLOCK_N + t), cm, mask=rows_ok)


@triton.jit
def _row_expsum(X, LIST, srow, NKP, NCH, nk, n_act, m, BLOCK_N: tl.constexpr):
    """Σ exp(x_j - m) of a softmax row over its listed chunks."""
    psum = 0.0
    for j in range(0, n_act):
        c = tl.load(LIST + srow * NCH + j)
        offs_n = c * BLOCK_N + tl.arange(0, BLOCK_N)
        x = tl.load(X + srow * NKP + offs_n, mask=offs_n < nk, other=NEG_INF)
        psum += tl.sum(tl.exp(x - m), 0)
    return psum


@triton.jit
def decode_tau_kernel(
    X, CMAX, LIST, TAUR, TAU, ALPHA, CU_Q, CU_K,
    stb, sth,
    H, NQ, NK, NKP, NCH, G, alpha_f, max_iters,
    BLOCK_N: tl.constexpr, CB: tl.constexpr, ALPHA_T: tl.constexpr, IS_VARLEN: tl.constexpr,
    NEED_STATS: tl.constexpr,
):
    """τ of one query row (module docstring), stored in TAUR (the scratch row's entry; NaN when a non-finite score
    poisons the row, +inf when it sees no key). LIST: per scratch row, the chunks above the first threshold (the
    lower bound; every visible chunk for softmax rows), NCH entries."""
    i = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0, nq, k0, nk = seq_bounds(b, CU_Q, CU_K, NQ, NK, IS_VARLEN)
    if i < nq:
        if ALPHA_T:
            a = tl.load(ALPHA + h) - 1.0
        else:
            a = alpha_f - 1.0
        soft = a == 0.0
        za = tl.where(soft, 1.0, a)
        srow = ((b * H + h) * NQ + i).to(tl.int64)
        nch = tl.cdiv(nk, BLOCK_N)
        # the row maximum, and whether a non-finite score poisons the row
        m = NEG_INF
        nbad = 0
        for c0 in range(0, nch, CB):
            offs_c = c0 + tl.arange(0, CB)
            cm = tl.load(CMAX + srow * NCH + offs_c, mask=offs_c < nch, other=NEG_INF)
            nbad += tl.sum((cm != cm).to(tl.int32), 0)
            m = tl.maximum(m, tl.max(tl.where(cm != cm, NEG_INF, cm), 0))
        empty = m == NEG_INF
        m_safe = tl.where(empty, 0.0, m)
        # τ starts at its lower bound (α-1)·m - 1 (softmax: the chunks of every visible key are listed); the
        # chunks above it, the only ones any later step visits, are listed once
        tau = tl.where(soft, NEG_INF, a * m_safe - 1.0)
        n_act = 0
        for c0 in range(0, nch, CB):
            offs_c = c0 + tl.arange(0, CB)
            cm = tl.load(CMAX + srow * NCH + offs_c, mask=offs_c < nch, other=NEG_INF)
            act = cm * za > tau
            pos = n_act + tl.cumsum(act.to(tl.int32), 0) - 1
            tl.store(LIST + srow * NCH + pos, offs_c, mask=act)
            n_act += tl.sum(act.to(tl.int32), 0)
        if soft:
            # softmax row: τ = m + log Σ exp(x - m)
            tau = m_safe + tl.log(tl.maximum(_row_expsum(X, LIST, srow, NKP, NCH, nk, n_act, m_safe, BLOCK_N), 1e-30))
        else:
            it = 0
            go = 1 - empty.to(tl.int32)
            while (it < max_iters) & (go > 0):
                c0s = tl.zeros([CB, BLOCK_N], tl.float32)
                c1s = tl.zeros([CB, BLOCK_N], tl.float32)
                c2s = tl.zeros([CB, BLOCK_N], tl.float32)
                ymin = tl.full([CB, BLOCK_N], float("inf"), tl.float32)
                for j0 in range(0, n_act, CB):
                    offs_j = j0 + tl.arange(0, CB)
                    ok = offs_j < n_act
                    idx = tl.load(LIST + srow * NCH + offs_j, mask=ok, other=0)
                    cm = tl.load(CMAX + srow * NCH + idx, mask=ok, other=NEG_INF)
                    act = ok & (cm * a > tau)
                    offs_n = idx[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
                    x = tl.load(X + srow * NKP + offs_n, mask=act[:, None] & (offs_n < nk), other=NEG_INF)
                    y = x * a - tau
                    pos = y > 0
                    if a == 0.5:
                        c0s += pos.to(tl.float32)
                        c1s += tl.where(pos, y, 0.0)
                        c2s += tl.where(pos, y * y, 0.0)
                        ymin = tl.minimum(ymin, tl.where(pos, y, float("inf")))
                    elif a == 1.0:
                        c0s += pos.to(tl.float32)
                        c1s += tl.where(pos, y, 0.0)
                        ymin = tl.minimum(ymin, tl.where(pos, y, float("inf")))
                    else:
                        yp = tl.where(pos, y, 1.0)
                        ps = tl.exp2(tl.log2(yp) / a)
                        c1s += tl.where(pos, ps, 0.0)  # Σ y^s
                        c2s += tl.where(pos, ps / yp, 0.0)  # Σ y^(s-1)
                cnt = tl.sum(tl.sum(c0s, 1), 0)
                s1 = tl.sum(tl.sum(c1s, 1), 0)
                s2 = tl.sum(tl.sum(c2s, 1), 0)
                ym = tl.min(tl.min(ymin, 1), 0)
                if a == 1.0:
                    # Michelot: the closed form on the current support, exact once no member drops out
                    step = (s1 - 1.0) / tl.maximum(cnt, 1.0)
                    fin = step <= ym
                elif a == 0.5:
                    c = tl.maximum(cnt, 1.0)
                    mean = s1 / c
                    t = mean - tl.sqrt(tl.maximum((1.0 - (s2 - s1 * mean)) / c, 0.0))
                    exact = (t >= 0) & (t <= ym)
                    step = tl.where(exact, t, (s2 - 1.0) / (2.0 * tl.maximum(s1, 1e-30)))
                    fin = exact | (tl.abs(step) <= 2e-7 * tl.maximum(tl.abs(tau), 1.0))
                else:
                    # Newton: f = Σ y^s - 1, f' = -s Σ y^(s-1), s = 1 / a
                    step = a * (s1 - 1.0) / tl.maximum(s2, 1e-30)
                    fin = tl.abs(step) <= 2e-7 * tl.maximum(tl.abs(tau), 1.0)
                tau += step
                go = 1 - fin.to(tl.int32)
                it += 1
        # a row with no visible key is empty (+inf: no weight anywhere); a non-finite score makes it NaN, also when
        # every chunk it sees is poisoned (m stays -inf there, so empty alone cannot tell)
        if empty:
            tau = float("inf")
        if nbad > 0:
            tau = float("nan")
        tl.store(TAUR + srow, tau)
        if NEED_STATS:
            tl.store(TAU + b * stb + h * sth + q0 + i, tau)


@triton.jit
def decode_apply_kernel(
    X, CMAX, TAUR, V, ACC, PSUM, PSUPP, ALPHA, CU_Q, CU_K,
    svb, svh, svn,
    H, NQ, NK, NKP, NCH, G, ROWS, alpha_f,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    SPAN_TILES: tl.constexpr, ALPHA_T: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """The weighted sum of V over one span of keys for all query rows of one KV head, shaped like
    decode_scores_kernel: p = y_+^(1/(α-1)) (softmax rows: exp(x - τ)) from the scores and τ, one tile of V per
    key tile, loaded only for keys some row weights and skipped when no row's chunk maximum lies above its τ.
    Writes this span's partial Σ p v, Σ p and support size per row (decode_finish_kernel adds the spans)."""
    b, hk, q0, nq, k0, nk, start, i, h, srow, rows_ok = _span_program(H, NQ, NK, G, CU_Q, CU_K, BLOCK_R, BLOCK_N,
                                                                      SPAN_TILES, IS_VARLEN)
    if ALPHA_T:
        a = tl.load(ALPHA + h, mask=rows_ok, other=1.5) - 1.0
    else:
        a = tl.zeros([BLOCK_R], tl.float32) + (alpha_f - 1.0)
    soft = a == 0.0
    za = tl.where(soft, 1.0, a)
    tau = tl.load(TAUR + srow, mask=rows_ok, other=float("inf"))
    offs_d = tl.arange(0, BLOCK_D)
    v_base = V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh + k0.to(tl.int64) * svn
    acc = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    psum = tl.zeros([BLOCK_R], tl.float32)
    supp = tl.zeros([BLOCK_R], tl.int32)
    n_tiles = tl.minimum(SPAN_TILES, tl.cdiv(nk - start, BLOCK_N))
    for t in range(0, n_tiles):
        c = start // BLOCK_N + t
        cm = tl.load(CMAX + srow * NCH + c, mask=rows_ok, other=NEG_INF)
        # a row takes part when its chunk holds a weighted key: a score above τ, any visible score for softmax
        act = rows_ok & tl.where(soft, cm > NEG_INF, cm * za > tau)
        if tl.max(act.to(tl.int32), 0) > 0:
            offs_n = c * BLOCK_N + tl.arange(0, BLOCK_N)
            kv_ok = offs_n < nk
            x = tl.load(X + srow[:, None] * NKP + offs_n[None, :], mask=act[:, None] & kv_ok[None, :],
                        other=NEG_INF)
            y = x * za[:, None] - tau[:, None]
            yp = tl.where(y > 0, y, 1.0)
            if ALPHA_T:
                w = tl.where(soft[:, None], tl.exp(y), tl.exp2(tl.log2(yp) / za[:, None]))
            elif alpha_f == 1.5:
                w = yp * yp
            elif alpha_f == 2.0:
                w = yp
            elif alpha_f == 1.0:
                w = tl.exp(y)
            else:
                w = tl.exp2(tl.log2(yp) / za[:, None])
            p = tl.where((y > 0) | soft[:, None], w, 0.0)
            p = tl.where(x > NEG_INF, p, 0.0)
            nz = p > 0
            supp += tl.sum(tl.where(soft[:, None], x > NEG_INF, nz).to(tl.int32), 1)
            used = tl.max(nz.to(tl.int32), 0) > 0
            vt = tl.load(v_base + offs_n.to(tl.int64)[:, None] * svn + offs_d[None, :],
                         mask=used[:, None] & (offs_d[None, :] < D), other=0.0)
            acc += tl.dot(p.to(vt.dtype), vt, input_precision=PREC)
            psum += tl.sum(p, 1)
    part = tl.program_id(0) * ROWS + srow
    tl.store(ACC + part[:, None] * BLOCK_D + offs_d[None, :], acc, mask=rows_ok[:, None])
    tl.store(PSUM + part, psum, mask=rows_ok)
    tl.store(PSUPP + part, supp, mask=rows_ok)


@triton.jit
def decode_finish_kernel(
    ACC, PSUM, PSUPP, TAUR, O, SUPP, CU_Q, CU_K,
    sob, soh, son, stb, sth,
    H, NQ, NK, ROWS, SPAN_KEYS,
    D: tl.constexpr, BLOCK_D: tl.constexpr, IS_VARLEN: tl.constexpr, NEED_STATS: tl.constexpr,
):
    """One query row's output: the spans' partial sums added and normalised by the sum of the weights (NaN where
    τ is NaN)."""
    i = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0, nq, k0, nk = seq_bounds(b, CU_Q, CU_K, NQ, NK, IS_VARLEN)
    if i < nq:
        srow = ((b * H + h) * NQ + i).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        acc = tl.zeros([BLOCK_D], tl.float32)
        psum = 0.0
        supp = 0
        for sp in range(0, tl.cdiv(nk, SPAN_KEYS)):  # the spans past a short sequence's keys hold zeros
            part = sp * ROWS + srow
            acc += tl.load(ACC + part * BLOCK_D + offs_d)
            psum += tl.load(PSUM + part)
            supp += tl.load(PSUPP + part)
        out = acc / tl.where(psum > 0, psum, 1.0)
        tau = tl.load(TAUR + srow)
        if tau != tau:
            out = out + float("nan")
        o_ptr = O + b.to(tl.int64) * sob + h.to(tl.int64) * soh + (q0 + i).to(tl.int64) * son + offs_d
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=offs_d < D)
        if NEED_STATS:
            tl.store(SUPP + b * stb + h * sth + q0 + i, supp)
