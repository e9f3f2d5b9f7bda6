"""Opcode counts of the backward and output kernels' SASS for sm_90 (no GPU needed; Triton's bundled
cuobjdump), to compare two trees instruction by instruction where registers alone do not explain a change:

    python benchmarks/sass_ops.py [D]     # default 64, bfloat16, causal, α = 1.5; dq under its register cap

Session 8 (NOTES): m next to τ - m in the dk/dv kernel showed as +2 LDGSTS and +16 FSEL per loop body; the
dq kernel's stack stores (STL) grew from 24 to 30.
"""
import collections
import os
import re
import sys

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
from kernel_resources import compile_sm90, cuobjdump  # noqa: E402

from entflash.kernels import config  # noqa: E402
from entflash.kernels.backward import dkdv_kernel, dq_kernel  # noqa: E402
from entflash.kernels.forward import output_kernel  # noqa: E402

OPS = ("FADD", "FMUL", "FFMA", "FMNMX", "FSEL", "LDG", "LDGSTS", "LDS", "HGMMA", "STL", "LDL")


def main(D=64):
    L = config.launch_config(D, torch.bfloat16)
    for fn, kw in ((output_kernel, {}), (dq_kernel, dict(maxnreg=L.dq_maxnreg)), (dkdv_kernel, {})):
        sass = cuobjdump(compile_sm90(fn, D, "bfloat16", **kw), "-sass")
        ops = collections.Counter()
        for line in sass.splitlines():
            m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
            if m:
                ops[m.group(1).split(".")[0]] += 1
        print(f"{fn.fn.__name__:14s} total {sum(ops.values()):5d}  " + "  ".join(f"{o} {ops[o]}" for o in OPS))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
