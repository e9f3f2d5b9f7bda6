"""CPU path benchmark (not a test): entflash's torch path vs torch SDPA on the same CPU.

    python benchmarks/cpu_path.py            # B=1, H=8, N=4096, D=64 fp32 + peak RSS at N=16384

Each measurement runs in a fresh subprocess so that peak RSS (ru_maxrss) is the
peak of that measurement alone.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time


def _one(kind: str, N: int, alpha: float, what: str) -> dict:
    import torch

    import entflash

    torch.manual_seed(0)
    B, H, D = 1, 8, 64
    q, k, v = (torch.randn(B, H, N, D, requires_grad=(what == "fwdbwd")) for _ in range(3))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run():
        if kind == "sdpa":
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            out = entflash.entmax_attention(q, k, v, alpha=alpha, backend="torch")
        if what == "fwdbwd":
            out.sum().backward()
        return out

    if what == "fwd":
        with torch.no_grad():
            run()
            t0 = time.perf_counter()
            run()
            dt = time.perf_counter() - t0
    else:
        run()
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": kind, "N": N, "alpha": alpha, "what": what, "seconds": round(dt, 3),
            "peak_rss_mib": round(peak / 1024, 1), "extra_rss_mib": round((peak - base) / 1024, 1)}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--one":  # one measurement, in the subprocess the parent started
        print(json.dumps(_one(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])))
        return
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rows = []
    cases = [("sdpa", 4096, 1.0, "fwd"), ("entflash", 4096, 1.5, "fwd"), ("entflash", 4096, 2.0, "fwd"),
             ("sdpa", 4096, 1.0, "fwdbwd"), ("entflash", 4096, 1.5, "fwdbwd"),
             ("entflash", 16384, 1.5, "fwd"), ("entflash", 16384, 1.5, "fwdbwd")]
    for c in cases:
        res = subprocess.run([sys.executable, __file__, "--one", *map(str, c)], capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    import torch

    meta = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cores": os.cpu_count()}
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
