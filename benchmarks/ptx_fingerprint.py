"""Fingerprints of the compiled kernels (sm_90 PTX, no GPU needed), to show that a refactor leaves the
generated code alone:

    python benchmarks/ptx_fingerprint.py > before.txt   # on the old tree
    python benchmarks/ptx_fingerprint.py > after.txt    # on the new tree; diff the two

Per kernel variant (four launch/dtype/α/mask/varlen combinations) it prints a hash of the PTX without
debug info and of its instruction multiset (register numbers and labels normalized, order ignored):
equal multisets mean the same instructions, only scheduled or numbered differently.
"""
import hashlib
import inspect
import os
import re

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
from kernel_resources import KERNELS, _signature  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.compiler import compile as tcompile  # noqa: E402

from entflash.kernels import config  # noqa: E402

VARIANTS = [  # D, dtype, KIND, causal, key padding mask, varlen
    (64, "bfloat16", config.KIND_ENTMAX15, True, False, False),
    (80, "float32", config.KIND_GENERAL, False, True, True),
    (128, "float16", config.KIND_SPARSEMAX, True, True, False),
    (64, "bfloat16", config.KIND_SOFTMAX, True, False, True),
]
_DEBUG = re.compile(r"^\s*\.b(8|16|32|64)\s|DW_|^\s*\.section|^\s*//|^\s*\.loc|^\s*\.file")


def fingerprint(ptx: str):
    code = [line for line in ptx.splitlines() if not _DEBUG.search(line)]
    exact = hashlib.sha1("\n".join(code).encode()).hexdigest()[:12]
    norm = [re.sub(r"\$L__\w+", "L", re.sub(r"%([a-z]+)\d+", r"%\1", line)) for line in code]
    multiset = hashlib.sha1("\n".join(sorted(n for n in norm if n.strip() != "L:")).encode()).hexdigest()[:12]
    return exact, multiset


def main():
    for D, dtype, kind, causal, kpm, varlen in VARIANTS:
        L = config.launch_config(D, getattr(torch, dtype))
        meta = dict(D=D, BLOCK_D=config.block_d(D), BLOCK_M=L.BLOCK_M, BLOCK_N=L.BLOCK_N, KIND=kind, CAUSAL=causal,
                    HAS_KPM=kpm, IS_VARLEN=varlen, PREC="ieee" if dtype == "float32" else None, RG=L.ROW_GROUP,
                    MAX_ITERS=config.MAX_ITERS_EXACT, KCHUNK=config.KCHUNK, NEED_STATS=True,
                    START=getattr(config, "MOMENT_START", False),
                    ALPHA_GRAD=kind == config.KIND_GENERAL)
        dt = {"bfloat16": "*bf16", "float16": "*fp16", "float32": "*fp32"}[dtype]
        for fn in KERNELS:
            cons = {k: v for k, v in meta.items() if k in inspect.signature(fn.fn).parameters}
            k = tcompile(ASTSource(fn=fn, signature=_signature(fn, dt, cons), constexprs=cons),
                         target=GPUTarget("cuda", 90, 32), options=dict(num_warps=L.num_warps, num_stages=L.num_stages))
            exact, multiset = fingerprint(k.asm["ptx"])
            print(f"{fn.fn.__name__:14s} D={D:<4d} {dtype:9s} kind={kind}  ptx {exact}  instructions {multiset}")


if __name__ == "__main__":
    main()
