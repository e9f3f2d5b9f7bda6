"""Fingerprints of the compiled kernels (sm_90 PTX, no GPU needed), to show that a refactor leaves the
generated code alone:

    python benchmarks/ptx_fingerprint.py > before.txt   # on the old tree
    python benchmarks/ptx_fingerprint.py > after.txt    # on the new tree; diff the two

Per kernel variant (four launch/dtype/α/mask/varlen combinations) it prints a hash of the PTX without
debug info and of its instruction multiset (register numbers and labels normalized, order ignored):
equal multisets mean the same instructions, only scheduled or numbered differently.
"""
import hashlib
import os
import re

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from kernel_resources import KERNELS, compile_sm90  # noqa: E402

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
        for fn in KERNELS:
            k = compile_sm90(fn, D, dtype, kind, causal, kpm, varlen, need_stats=True)
            exact, multiset = fingerprint(k.asm["ptx"])
            print(f"{fn.fn.__name__:14s} D={D:<4d} {dtype:9s} kind={kind}  ptx {exact}  instructions {multiset}")


if __name__ == "__main__":
    main()
