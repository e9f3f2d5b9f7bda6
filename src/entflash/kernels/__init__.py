"""Triton kernels for α-entmax attention, one module per pass (docs/design.md, "Kernel pipeline").

pass1.py    the one dense pass: row maxima, tile map, a lower bound of τ
tau.py      the τ pass: sweeps over the candidate tiles until every row's τ is exact
gather.py   the τ pass's last sweeps over the rows still unfinished, gathered
output.py   the sparse output pass
dq.py       the backward's dq (and δ, and a per-head α's gradient)
dkdv.py     the backward's dk and dv
decode.py   the decode path: forward-only calls with few query rows per KV head (scores once, then τ and
            the output per row over the chunks above its lower bound)
tiles.py    shared @triton.jit helpers (scores, masks, probabilities, tile lists)
configs.py  KernelOptions: launch settings by GPU architecture, dtype and head dim
launch.py   geometry, buffers and the sequence of launches of a call
ops.py      torch.library custom ops, autograd and the entry points
"""
