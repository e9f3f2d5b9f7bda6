"""How each kernel's time responds to its launch setting (num_warps, num_stages), one kernel at a time.

    PYTHONPATH=src python benchmarks/launch_sweep.py [out.jsonl]

Every other kernel keeps config.launch_config's setting (8 warps, 2 stages at D <= 128 bf16); the block
sizes stay fixed because the tile map ties them across passes. For each variant it patches one kernel
launch in entflash.kernels.api and times the public entmax_attention call (forward, forward+backward) with
the benchmark harness (entflash.bench run_case), so a row's difference to the baseline row is that
kernel's change. A variant that does not fit (shared memory, registers) is reported with its error.
Data for choosing per-kernel settings later; it changes nothing in the library.
"""
import json
import sys

import torch

from entflash.bench.__main__ import _env, run_case
from entflash.kernels import api

VARIANTS = {
    "rowmax_kernel": [(8, 3), (8, 4), (4, 2), (4, 3)],
    "tau_kernel": [(8, 1), (8, 3)],
    "output_kernel": [(8, 1), (8, 3)],
    "dq_kernel": [(8, 1), (8, 3)],
    "dkdv_kernel": [(8, 1), (8, 3)],
}
CASES = [(64, "clustered"), (128, "clustered"), (64, "random")]


class _Override:
    """kernel[grid](...) with num_warps / num_stages replaced."""

    def __init__(self, kernel, **launch):
        self.kernel, self.launch = kernel, launch

    def __getitem__(self, grid):
        run = self.kernel[grid]
        return lambda *a, **kw: run(*a, **{**kw, **self.launch})


def main(out_path):
    env = _env()
    with open(out_path, "a") as fh:
        def emit(row):
            row.update(env)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(json.dumps({k: row.get(k) for k in ("D", "inputs", "kernel", "warps", "stages", "fwd_ms",
                                                     "fwdbwd_ms", "error")}), flush=True)

        for D, inputs in CASES:
            base = run_case("entflash", D, 16384, True, inputs, rep=40)
            emit(dict(base, kernel="baseline", warps=None, stages=None))
            for name, settings in VARIANTS.items():
                orig = getattr(api, name)
                for warps, stages in settings:
                    setattr(api, name, _Override(orig, num_warps=warps, num_stages=stages))
                    try:
                        row = run_case("entflash", D, 16384, True, inputs, rep=40)
                    finally:
                        setattr(api, name, orig)
                    emit(dict(row, kernel=name, warps=warps, stages=stages))
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "launch_sweep.jsonl"))
