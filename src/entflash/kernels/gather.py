"""The split τ pass's last sweeps over gathered rows (KernelOptions.tau_gather_from).

On dense rows the split pass (tau.tau_kernel, one launch per sweep) finishes
almost every row in its first two sweeps; the rest, about 1% of the rows on
random inputs, sit in most query blocks, so a third launch over blocks sweeps
whole 128-row blocks for one or two rows each (1.6 ms of a 7 ms τ pass at D64
N16k on random inputs). Here those rows are gathered per (batch, head)
instead: gather_rows_kernel lists the unfinished rows, tau_gather_kernel sweeps
them in 128-row tiles of gathered rows, as many sweeps as they need, reading
and writing the same per-row state. A last tau_kernel launch without sweeps
then writes τ and τ_min from that state, as the split pass's last launch
always does. Measured on an H200 at D64 N16k causal: τ pass 7.04 → 5.52 ms on
random inputs, 1.18 → 1.09 on clustered ones (docs/performance.md).

A gathered tile visits a key tile when the row-relative tile map admits it for
any of its rows (the map entry of the row's group above τ_i - m_i - W), the
same test a query block applies per row group, so the sums and the acceptance
test (tau.tau_step) are those of the block-wise sweeps.
"""

import triton
import triton.language as tl

from .tau import load_state, rel_thr, store_state, tau_step, tile_sums
from .tiles import head_alpha, load_cols, load_rows, mask_scores_b, program_ids, row_offset, safe_max


@triton.jit
def gather_rows_kernel(M, ST, ALPHA, CU_Q, CU_K, ROWS, COUNT, H, Nq, Nk, smb, smh, scale, sst, nrow,
                       KIND: tl.constexpr, IS_VARLEN: tl.constexpr, CHUNK: tl.constexpr):
    """ROWS[bh, :COUNT[bh]]: the rows of (batch, head) bh = program_id(0) that the split pass left unfinished
    (a finite row maximum and no accepted root in the state's res plane), in increasing order. Softmax heads
    (α = 1 under a per-head α) have no iteration state and no such rows."""
    pid_bh = tl.program_id(0)
    b, h, _, qs, Lq, _, _ = program_ids(pid_bh, H, 1, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
    stat_off = row_offset(b, h, qs, smb, smh, 1)
    rows = ROWS + pid_bh.to(tl.int64) * nrow
    n = Lq
    if KIND == 3:
        _, _, is_soft = head_alpha(ALPHA, h, scale, KIND)
        n = tl.where(is_soft, 0, Lq)
    count = n * 0
    for c in range(0, n, CHUNK):
        offs = c + tl.arange(0, CHUNK)
        inb = offs < Lq
        m = tl.load(M + stat_off + offs, mask=inb, other=float("-inf"))
        res = tl.load(ST + 3 * sst + stat_off + offs, mask=inb, other=0.0)
        todo = (m > float("-inf")) & ~(res < float("inf"))
        t32 = todo.to(tl.int32)
        tl.store(rows + count + tl.cumsum(t32, 0) - 1, offs, mask=todo)
        count += tl.sum(t32, 0)
    tl.store(COUNT + pid_bh, count)


@triton.jit
def _rows_tile_list(MAP, rmask, thr, n, LIST, KC: tl.constexpr):
    """The key tiles j < n whose map entry MAP[r] + j exceeds thr[r] for some gathered row r (rmask: the lanes
    that hold a row), in increasing order in LIST[0:count]; returns count (thr = inf for rows that need no
    sweep)."""
    tl.debug_barrier()
    count = n * 0
    for c in range(0, n, KC):
        offs = c + tl.arange(0, KC)
        inb = offs < n
        vals = tl.load(MAP[None, :] + offs[:, None], mask=inb[:, None] & rmask[None, :], other=float("-inf"))
        hit = vals.to(tl.float32) > thr[None, :]
        keep = inb & (tl.max(hit.to(tl.int32), 1) > 0)
        k32 = keep.to(tl.int32)
        tl.store(LIST + count + tl.cumsum(k32, 0) - 1, offs, mask=keep)
        count += tl.sum(k32, 0)
    tl.debug_barrier()
    return count


@triton.jit
def tau_gather_kernel(
    Q, K, KPM, AM, CU_Q, CU_K, ALPHA, M, TMAX, LISTS, ST, ROWS, COUNT,
    sqb, sqh, sqn, skb, skh, skn, skpm, sam_b, sam_h, sam_q, sam_k, wl, wr, smb, smh,
    H, G, Nq, Nk, n_qblk, n_kblk, scale, sst, nrow,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_MASK: tl.constexpr, WINDOW: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, RG: tl.constexpr, N_LOOP: tl.constexpr, KC: tl.constexpr, W: tl.constexpr,
    FAST_LOG2: tl.constexpr,
):
    """Up to N_LOOP sweeps for the gathered rows ROWS[bh, j·BLOCK_M : (j+1)·BLOCK_M] (j = program_id(0)),
    state in ST as tau_kernel keeps it, tiles visited down to W below τ as in its later sweeps. The program's
    tile list lives in LISTS' entry of query block j of bh, which no other program of this launch uses."""
    pid_j = tl.program_id(0)
    pid_bh = tl.program_id(1)
    count = tl.load(COUNT + pid_bh)
    start = pid_j * BLOCK_M
    if start < count:
        INF: tl.constexpr = float("inf")
        b, h, hk, qs, Lq, ks, Lk = program_ids(pid_bh, H, G, CU_Q, CU_K, Nq, Nk, IS_VARLEN)
        qk_scale, inv_a, _ = head_alpha(ALPHA, h, scale, KIND)
        sel = start + tl.arange(0, BLOCK_M)
        smask = sel < count
        # lanes without a row point past the end: masked in every load, -inf in every score
        offs_m = tl.load(ROWS + pid_bh.to(tl.int64) * nrow + sel, mask=smask, other=0)
        offs_m = tl.where(smask, offs_m, Lq)
        offs_n0 = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        k_base = K + row_offset(b, hk, ks, skb, skh, skn)
        kpm_row = KPM + b.to(tl.int64) * skpm
        am_row = AM + b.to(tl.int64) * sam_b + h.to(tl.int64) * sam_h
        stat_off = row_offset(b, h, qs, smb, smh, 1)
        m = tl.load(M + stat_off + offs_m, mask=smask, other=float("-inf"))
        valid = m > float("-inf")
        m_safe = safe_max(m)
        st = ST + stat_off + offs_m
        tau, lo, hi_b, res, done = load_state(st, sst, smask, valid)
        q = load_rows(Q + row_offset(b, h, qs, sqb, sqh, sqn), offs_m, offs_d, Lq, sqn, D)
        hi = Lk
        if CAUSAL:
            hi = tl.minimum(Lk, tl.max(tl.where(smask, offs_m, 0), 0) + 1 + (Lk - Lq))
        n_tiles = tl.cdiv(hi, BLOCK_N)
        # map row of each gathered row's group (row-relative entries after sweep 0; see tau.py)
        map_rows = TMAX + (pid_bh.to(tl.int64) * n_qblk * (BLOCK_M // RG) + offs_m // RG) * n_kblk
        tlist = LISTS + (pid_bh.to(tl.int64) * n_qblk + pid_j) * n_kblk
        HN: tl.constexpr = BLOCK_N // 4
        for it in range(0, N_LOOP):
            todo = valid & ~done
            if tl.sum(todo.to(tl.int32), 0) > 0:
                thr = tl.where(todo, rel_thr(tau, m_safe) - W, INF)
                n_list = _rows_tile_list(map_rows, smask, thr, n_tiles, tlist, KC)
                h0 = tl.zeros([BLOCK_M, HN], tl.float32)
                h1 = tl.zeros([BLOCK_M, HN], tl.float32)
                h2 = tl.zeros([BLOCK_M, HN], tl.float32)
                h3 = tl.full([BLOCK_M, HN], INF, tl.float32)
                for i in range(0, n_list):
                    offs_n = tl.load(tlist + i) * BLOCK_N + offs_n0
                    kT = load_cols(k_base, offs_n, offs_d, Lk, skn, D)
                    y = mask_scores_b(tl.dot(q, kT, input_precision=PREC) * qk_scale - tau[:, None], offs_m[:, None],
                                      offs_n[None, :], Lq, Lk, kpm_row, am_row, sam_q, sam_k, wl, wr, CAUSAL,
                                      HAS_KPM, HAS_MASK, WINDOW)
                    h0, h1, h2, h3 = tile_sums(y, h0, h1, h2, h3, inv_a, KIND, BLOCK_M, BLOCK_N, FAST_LOG2)
                tau, lo, hi_b, res, done = tau_step(tl.sum(h0, 1), tl.sum(h1, 1), tl.sum(h2, 1), tl.min(h3, 1), todo,
                                                    tau, m_safe, lo, hi_b, res, done, inv_a, KIND, W)
        store_state(st, sst, smask, tau, lo, hi_b, res)
