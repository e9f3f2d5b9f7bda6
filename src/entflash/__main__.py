"""Command line: `python -m entflash demo` or `python -m entflash bench ...`."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m entflash {demo,bench} [options]\n"
              "  demo   entmax vs softmax attention on a small example (CPU; also the GPU kernels when CUDA is present)\n"
              "  bench  benchmark and sparsity report (python -m entflash bench --help)")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from .demo import run_demo

        return run_demo(gpu="--cpu" not in rest)
    if cmd == "bench":
        from .bench.__main__ import main as bench_main

        return bench_main(rest)
    print(f"unknown command {cmd!r}; expected 'demo' or 'bench'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
