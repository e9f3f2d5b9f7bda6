"""Registers, spills (stack bytes per thread) and shared memory of the kernels for sm_90, compiled on a
machine without a GPU with Triton's bundled ptxas and cuobjdump (no device time needed):

    python benchmarks/kernel_resources.py [D] [dtype]       # default 64 bfloat16, causal, α = 1.5

A STACK above 0 means spills: check it after every kernel change that adds live tensors.
"""
import inspect
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.compiler import compile as tcompile  # noqa: E402

from entflash.kernels import config  # noqa: E402
from entflash.kernels.backward import dkdv_kernel, dq_kernel  # noqa: E402
from entflash.kernels.forward import output_kernel  # noqa: E402
from entflash.kernels.threshold import rowmax_kernel, tau_kernel  # noqa: E402


KERNELS = (rowmax_kernel, tau_kernel, output_kernel, dq_kernel, dkdv_kernel)


def _signature(fn, dt, constexprs):
    ptr = {"Q": dt, "K": dt, "V": dt, "DO": dt, "O": dt, "OUT": dt, "DQ": dt, "DK": dt, "DV": dt, "KPM": "*u8",
           "CU_Q": "*i32", "CU_K": "*i32", "LISTS": "*i32", "SUPP": "*i32", "TMAX": "*bf16"}
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ptr:
            sig[name] = ptr[name]
        elif name.isupper() and name not in ("H", "G"):
            sig[name] = "*fp32"  # M, TAU, TAUMIN, ALPHA, DELTA, DALPHA and other float buffers
        elif name == "scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_sm90(fn, D, dtype, kind=config.KIND_ENTMAX15, causal=True, kpm=False, varlen=False, need_stats=False,
                 maxnreg=None, first=True, state=False, one_sweep=None):
    """fn compiled for sm_90 (no GPU needed) with the launch settings the library would use.

    Pointers and integer arguments carry the divisibility-by-16 hint that Triton's launcher gives them at
    run time on the benchmark shapes (aligned tensors, strides and lengths multiples of 16): without it the
    K loads compile to scalar 2-byte loads without cp.async, code the GPU never runs."""
    import torch

    L = config.launch_config(D, getattr(torch, dtype))
    kernel = {"rowmax_kernel": "rowmax", "output_kernel": "output", "dq_kernel": "dq",
              "dkdv_kernel": "dkdv"}.get(fn.fn.__name__, "split" if state else "tau")
    meta = dict(D=D, BLOCK_D=config.block_d(D), BLOCK_M=L.BLOCK_M, BLOCK_N=L.BLOCK_N, KIND=kind, CAUSAL=causal,
                HAS_KPM=kpm, IS_VARLEN=varlen, PREC="ieee" if dtype == "float32" else None, RG=L.ROW_GROUP,
                MAX_ITERS=config.MAX_ITERS_EXACT, KCHUNK=config.KCHUNK, NEED_STATS=need_stats,
                ALPHA_GRAD=kind == config.KIND_GENERAL, NEG_SCALE=False, FIRST=first, STATE=state,
                N_LOOP=(0 if first else 1) if state else config.MAX_ITERS_EXACT - 1, KPP=L.dkdv_kpp,
                QC=L.dkdv_qc or L.BLOCK_M,
                ONE_SWEEP=config.dq_one_sweep(kind == config.KIND_GENERAL) if one_sweep is None else one_sweep,
                W=config.sweep_margin(kind), SPLIT=L.split(kernel), FULL_TILES=L.dq_full_tiles,
                NSUB=L.bound_subsets, DEPTH=L.bound_depth, RELATIVE=L.dkdv_relative, WRITE_TABS=not L.dkdv_relative)
    dt = {"bfloat16": "*bf16", "float16": "*fp16", "float32": "*fp32"}[dtype]
    cons = {k: v for k, v in meta.items() if k in inspect.signature(fn.fn).parameters}
    sig = _signature(fn, dt, cons)
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(inspect.signature(fn.fn).parameters)
             if sig[name] != "constexpr" and name not in ("scale", "H", "G")}
    src = ASTSource(fn=fn, signature=sig, constexprs=cons, attrs=attrs)
    opts = dict(num_warps=L.kernel_warps(kernel), num_stages=L.pipeline_stages(kernel))
    if maxnreg:
        opts["maxnreg"] = maxnreg
    return tcompile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def cuobjdump(kernel, *flags) -> str:
    """The stdout of Triton's bundled cuobjdump with `flags` on a compiled kernel's cubin."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        return subprocess.run([tool, *flags, f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)


def main(D=64, dtype="bfloat16"):
    import torch

    L = config.launch_config(D, getattr(torch, dtype))
    print(f"sm_90, D={D}, {dtype}, BLOCK {L.BLOCK_M}x{L.BLOCK_N}, {L.num_warps} warps, {L.num_stages} stages")
    # the τ kernel also as the split pass's two one-sweep launches, with the register cap they run under
    variants = [(fn, fn.fn.__name__, {}) for fn in KERNELS]
    variants[2:2] = [(tau_kernel, f"tau split 1st{tag}", dict(first=True, state=True, maxnreg=cap))
                     for tag, cap in (("", None), (" cap", L.split_maxnreg))]
    variants[4:4] = [(tau_kernel, f"tau split nth{tag}", dict(first=False, state=True, maxnreg=cap))
                     for tag, cap in (("", None), (" cap", L.split_maxnreg))]
    # and the kernels that run under a register cap at this head dim (config.launch_config), capped
    for fn, cap in ((rowmax_kernel, L.rowmax_maxnreg), (output_kernel, L.output_maxnreg), (dq_kernel, L.dq_maxnreg)):
        if cap:
            variants.append((fn, f"{fn.fn.__name__} cap", dict(maxnreg=cap)))
    for fn, name, kw in variants:
        k = compile_sm90(fn, D, dtype, **kw)
        usage = cuobjdump(k, "--dump-resource-usage")
        res = next((line.split("REG:")[1] for line in usage.splitlines() if "REG:" in line), "?")
        regs, stack = res.split()[0], res.split()[1]
        print(f"  {name:18s} registers {regs:>4s}  {stack:12s}  shared {k.metadata.shared} B")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64, sys.argv[2] if len(sys.argv) > 2 else "bfloat16")
