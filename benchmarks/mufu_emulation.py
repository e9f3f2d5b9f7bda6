"""pytest plugin: the Triton interpreter with sm_90's approximate float32 math, to look for GPU-only precision
failures on a machine without a GPU (NOTES session 9). Correction (NOTES session 10): the τ kernel's SASS has
no MUFU.LG2 — Triton lowers tl.log2 on float32 to libdevice's log2f (an FMA polynomial, about 1 ulp), so the
lg2 model below is harsher than the GPU; ex2 and `/` are modelled as the GPU does them:

    TRITON_INTERPRET=1 PYTHONPATH=benchmarks python -m pytest -p mufu_emulation tests/test_kernels.py -k dalpha

lg2.approx.f32 (absolute error up to 2^-22.6 on [0.5, 2), relative 2^-22 elsewhere), ex2.approx.f32 (relative
2^-22.5), the natural log as lg2 × ln 2, and the `/` of float32 as div.full.f32 (about 1 ulp); tl.math.div_rn
stays correctly rounded. Each error is a deterministic function of the input's bits, like the hardware's;
the bounds are PTX's documented ones, the shape of the error inside them is made up. Not emulated: FMA
contraction, the GPU's reduction orders, tensor-core dots.
"""
import numpy as np
from triton.runtime import interpreter as _interp


def _noise(x, salt):
    """A value in [-1, 1) per element, from the element's float32 bits."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    h = (b * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(2**32)
    return (h.astype(np.float64) / 2**32) * 2 - 1


def _lg2(x):
    if x.dtype != np.float32:
        return np.log2(x)
    with np.errstate(all="ignore"):
        r = np.log2(x.astype(np.float64))
        err = np.where((x >= 0.5) & (x < 2.0), 2.0 ** -22.6, np.abs(r) * 2.0 ** -22) * _noise(x, 1)
        return (r + np.where(np.isfinite(r), err, 0)).astype(np.float32)


def _ex2(x):
    if x.dtype != np.float32:
        return np.exp2(x)
    with np.errstate(all="ignore"):
        return (np.exp2(x.astype(np.float64)) * (1 + 2.0 ** -22.5 * _noise(x, 2))).astype(np.float32)


def _ln(x):
    return (_lg2(x).astype(np.float64) * np.log(2)).astype(np.float32) if x.dtype == np.float32 else np.log(x)


def _fdiv(a, b):
    if getattr(a, "dtype", None) != np.float32:
        return np.divide(a, b)
    with np.errstate(all="ignore"):
        r = np.divide(a, b)
        return (r.astype(np.float64) * (1 + 2.0 ** -23 * _noise(r, 3))).astype(np.float32)


_B = _interp.InterpreterBuilder
_B.create_log2 = lambda self, arg: self.unary_op(arg, _lg2)
_B.create_exp2 = lambda self, arg: self.unary_op(arg, _ex2)
_B.create_log = lambda self, arg: self.unary_op(arg, _ln)
_B.create_fdiv = lambda self, lhs, rhs: self.binary_op(lhs, rhs, _fdiv)
