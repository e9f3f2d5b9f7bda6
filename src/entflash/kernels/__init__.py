"""Triton kernels for α-entmax attention (DESIGN.md §4).

threshold.py  pass 1 (row max + per-tile max) and the τ pass
forward.py    sparse output pass
backward.py   sparse dq and dk/dv passes
common.py     shared @triton.jit helpers (tile scores, probabilities)
config.py     block sizes and launch settings, interpreter handling
api.py        torch.library custom ops, autograd, launchers
"""
