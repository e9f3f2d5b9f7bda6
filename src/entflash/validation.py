"""Input validation of the public attention API, in one place.

Every check raises TypeError (wrong type) or ValueError (wrong value) with a
message that names the argument, the value found and what is accepted.
attention.py runs these before dispatching; the backends trust their inputs.
"""

from __future__ import annotations

import math
import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BACKENDS = ("auto", "torch", "triton")
MAX_KERNEL_HEAD_DIM = 256


def check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"Expected {name} to be a torch.Tensor, but got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"Expected {name} to be float16, bfloat16, float32 or float64, but got {name}.dtype: {t.dtype}"
        )


def check_qkv(q, k, v, rank, layout):
    for name, t in (("query", q), ("key", k), ("value", v)):
        check_tensor(name, t)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            "Expected query, key and value to have the same dtype, but got "
            f"query.dtype: {q.dtype}, key.dtype: {k.dtype}, value.dtype: {v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(
            "Expected query, key and value to be on the same device, but got "
            f"query.device: {q.device}, key.device: {k.device}, value.device: {v.device}"
        )
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dim() != rank:
            raise ValueError(f"Expected {name} to be {rank}-D {layout}, but got {name}.shape: {tuple(t.shape)}")


def check_heads(H, Hkv, q, k):
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(
            f"Expected the number of query heads ({H}) to be a multiple of the number of key/value heads "
            f"({Hkv}) for GQA/MQA; got query.shape {tuple(q.shape)}, key.shape {tuple(k.shape)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"Expected query and key to have the same head dim, but got query.shape[-1]: {q.shape[-1]}, "
            f"key.shape[-1]: {k.shape[-1]}"
        )


def check_alpha(alpha, H, device):
    """A float α in [1, 2], or a tensor of shape (H,) or () on the inputs' device; returns float or tensor."""
    if isinstance(alpha, bool) or not isinstance(alpha, (float, int, torch.Tensor)):
        raise TypeError(
            f"Expected alpha to be a float in [1, 2] or a tensor of shape ({H},), but got {type(alpha).__name__}"
        )
    if isinstance(alpha, torch.Tensor):
        if not alpha.is_floating_point():
            raise TypeError(f"Expected alpha tensor to be floating point, but got alpha.dtype: {alpha.dtype}")
        if tuple(alpha.shape) not in ((H,), ()):
            raise ValueError(
                f"Expected alpha tensor of shape ({H},) (one α per query head) or a 0-d tensor, "
                f"but got alpha.shape: {tuple(alpha.shape)}"
            )
        if alpha.device != device:
            raise ValueError(f"Expected alpha on the inputs' device {device}, but got alpha.device: {alpha.device}")
        # Values are checked where that costs no device synchronisation (CPU tensors). On CUDA, keep a learnable
        # α in range by parametrization (e.g. 1 + sigmoid(θ), as integrations.transformers does).
        if alpha.device.type == "cpu" and alpha.numel() and not torch.compiler.is_compiling():
            bad = ~((alpha >= 1) & (alpha <= 2))
            if bool(bad.any()):
                found = alpha.detach()[bad].flatten()[0].item()
                raise ValueError(f"Expected alpha values in [1, 2], but found {found}")
        return alpha
    val = float(alpha)
    if not math.isfinite(val) or val < 1.0 or val > 2.0:
        raise ValueError(
            f"Expected alpha in [1, 2] (1 = softmax, 1.5 = entmax-1.5, 2 = sparsemax), but got alpha: {alpha}"
        )
    return val


def check_scale(scale, D):
    """The scale as a float (default 1/sqrt(D))."""
    if scale is None:
        return 1.0 / math.sqrt(D) if D > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (float, int)):
        raise TypeError(f"Expected scale to be a float or None, but got {type(scale).__name__}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"Expected scale to be finite, but got scale: {scale}")
    return float(scale)


def check_flag(name, val):
    if not isinstance(val, bool):
        raise TypeError(f"Expected {name} to be a bool, but got {type(val).__name__}")


def check_key_padding_mask(kpm, B, Nk, device):
    if kpm is None:
        return
    if not isinstance(kpm, torch.Tensor):
        raise TypeError(f"Expected key_padding_mask to be a bool tensor, but got {type(kpm).__name__}")
    if kpm.dtype != torch.bool:
        raise TypeError(f"Expected key_padding_mask.dtype to be torch.bool (True = keep), but got {kpm.dtype}")
    if tuple(kpm.shape) != (B, Nk):
        raise ValueError(
            f"Expected key_padding_mask of shape (batch, key_seq) = ({B}, {Nk}), but got {tuple(kpm.shape)}"
        )
    if kpm.device != device:
        raise ValueError(f"Expected key_padding_mask on {device}, but got key_padding_mask.device: {kpm.device}")


def check_cu_seqlens(name, cu, total, device):
    """Validate packed-sequence offsets; returns them as a host list (one device synchronisation on CUDA)."""
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"Expected {name} to be an int32 tensor, but got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        raise TypeError(f"Expected {name}.dtype to be torch.int32, but got {cu.dtype}")
    if cu.dim() != 1 or cu.numel() < 1:
        raise ValueError(f"Expected {name} to be 1-D of length batch + 1, but got shape {tuple(cu.shape)}")
    if cu.device != device:
        raise ValueError(f"Expected {name} on {device}, but got {name}.device: {cu.device}")
    host = cu.tolist()
    if host[0] != 0:
        raise ValueError(f"Expected {name}[0] == 0, but got {host[0]}")
    if any(b < a for a, b in zip(host, host[1:])):
        raise ValueError(f"Expected {name} to be non-decreasing, but got {host}")
    if host[-1] != total:
        raise ValueError(f"Expected {name}[-1] == total tokens ({total}), but got {host[-1]}")
    return host


def check_max_seqlen(name, val, cu):
    if isinstance(val, bool) or not isinstance(val, int):
        raise TypeError(f"Expected {name} to be an int, but got {type(val).__name__}")
    longest = max((b - a for a, b in zip(cu, cu[1:])), default=0)
    if val < longest:
        raise ValueError(f"Expected {name} >= the longest sequence ({longest}), but got {name}: {val}")


def check_backend(backend, device):
    """The backend that runs the call: "auto" resolves to "triton" for CUDA tensors and "torch" otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"Expected backend to be one of {BACKENDS}, but got backend: {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 for CPU tensors; got device {device}"
        )
    return backend


def check_kernel_options(kernel_options, backend):
    """kernel_options: None, or a KernelOptions for a call that runs the Triton kernels."""
    if kernel_options is None:
        return
    from .kernels.configs import KernelOptions

    if not isinstance(kernel_options, KernelOptions):
        raise TypeError(
            f"Expected kernel_options to be an entflash.kernels.configs.KernelOptions or None, but got "
            f"{type(kernel_options).__name__}"
        )
    if backend != "triton":
        raise ValueError(f"kernel_options applies to the Triton kernels, but this call runs backend={backend!r}")


def check_kernel_inputs(q, v):
    """What the Triton kernels support: dtype and head dims."""
    if q.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"backend='triton' supports float16, bfloat16 and float32, but got query.dtype: {q.dtype}; "
            "use backend='torch' for float64"
        )
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"backend='triton' needs value's head dim equal to query's, but got value.shape[-1]: {v.shape[-1]} and "
            f"query.shape[-1]: {q.shape[-1]}; use backend='torch' for a different value head dim"
        )
    if q.shape[-1] > MAX_KERNEL_HEAD_DIM:
        raise ValueError(
            f"backend='triton' supports head dims up to {MAX_KERNEL_HEAD_DIM}, but got query.shape[-1]: "
            f"{q.shape[-1]}; use backend='torch'"
        )


def check_window(window):
    """None, or (left, right) ints >= -1 (-1: unbounded on that side); returns None when both sides are
    unbounded."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError(f"Expected window to be None or a (left, right) pair of ints, but got {window!r}")
    for name, val in zip(("left", "right"), window):
        if isinstance(val, bool) or not isinstance(val, int):
            raise TypeError(f"Expected window's {name} bound to be an int (-1 = unbounded), but got {val!r}")
        if val < -1:
            raise ValueError(f"Expected window's {name} bound to be >= -1 (-1 = unbounded), but got {val}")
    left, right = int(window[0]), int(window[1])
    return None if left == -1 and right == -1 else (left, right)


def check_attn_mask(attn_mask, B, H, Nq, Nk, device):
    """None, or a mask broadcastable to (B, H, Nq, Nk): bool (True = attend), or float with only 0 (attend) and
    -inf (do not); returns a 4-D bool tensor that may keep size-1 (broadcast) dimensions. A float mask's values
    are checked, one device synchronisation on CUDA; a bool mask needs none."""
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"Expected attn_mask to be a bool tensor (True = attend) or None, but got "
                        f"{type(attn_mask).__name__}")
    if attn_mask.device != device:
        raise ValueError(f"Expected attn_mask on {device}, but got attn_mask.device: {attn_mask.device}")
    if not 2 <= attn_mask.dim() <= 4:
        raise ValueError(f"Expected attn_mask broadcastable to (batch, heads, queries, keys) = ({B}, {H}, {Nq}, "
                         f"{Nk}) with 2 to 4 dims, but got attn_mask.shape: {tuple(attn_mask.shape)}")
    mask = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    for size, full, name in zip(mask.shape, (B, H, Nq, Nk), ("batch", "heads", "queries", "keys")):
        if size not in (1, full):
            raise ValueError(f"Expected attn_mask broadcastable to (batch, heads, queries, keys) = ({B}, {H}, {Nq}, "
                             f"{Nk}), but got attn_mask.shape: {tuple(attn_mask.shape)} ({name}: {size})")
    if mask.dtype == torch.bool:
        return mask
    if not mask.is_floating_point():
        raise TypeError(f"Expected attn_mask to be bool (True = attend) or a float 0 / -inf mask, but got "
                        f"attn_mask.dtype: {attn_mask.dtype}")
    allowed = (mask == 0) | (mask == float("-inf"))
    if not bool(allowed.all()):
        bad = mask[~allowed].flatten()[0].item()
        raise ValueError(f"Expected a float attn_mask to hold only 0 (attend) and -inf (masked), but found {bad}; "
                         "additive biases are not supported: pass a bool mask")
    return mask == 0


def check_dropout(dropout_p, generator):
    """dropout_p: a float in [0, 1); generator: None or a torch.Generator."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (float, int)):
        raise TypeError(f"Expected dropout_p to be a float in [0, 1), but got {type(dropout_p).__name__}")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"Expected dropout_p in [0, 1), but got dropout_p: {dropout_p}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"Expected generator to be a torch.Generator or None, but got {type(generator).__name__}")
    return float(dropout_p)
