"""Per-kernel GPU time of one forward+backward, entflash next to AdaSplash-2 (torch.profiler).

`kernel_profile.py [D N B inputs]...` (default: 64 4096 8 random, 128 16384 2 random; causal, bf16, H = 16):
for entflash and AdaSplash-2 (when importable) prints each kernel's mean time per f+b call, so that a
backward can be compared kernel by kernel (the bench only gives totals). `--ncu`: no profiler; warms up,
then runs one f+b per method between cudaProfilerStart/Stop, for `ncu --profile-from-start off`.
"""
import sys
from collections import defaultdict

import torch

from entflash.bench import autotune_cache
from entflash.bench.inputs import make_inputs
from entflash.bench.methods import get_method

METHODS = ("entflash", "adasplash_v2")


def fwd_bwd(fn, q, k, v, do):
    q.grad = k.grad = v.grad = None
    fn(q, k, v).backward(do)


def cases(args):
    if not args:
        return [(64, 4096, 8, "random"), (128, 16384, 2, "random")]
    if len(args) % 4:
        raise SystemExit(f"cases are groups of four (D N B inputs), got {args}")
    return [(int(args[i]), int(args[i + 1]), int(args[i + 2]), args[i + 3]) for i in range(0, len(args), 4)]


def profile(fn, q, k, v, do, iters=10):
    for _ in range(3):
        fwd_bwd(fn, q, k, v, do)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fwd_bwd(fn, q, k, v, do)
        torch.cuda.synchronize()
    per = defaultdict(float)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per[ev.name] += ev.device_time / 1000.0 / iters  # us -> ms
    return per


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="*", help="D N B inputs, repeated")
    ap.add_argument("--ncu", action="store_true", help="one profiled call per method, for ncu")
    args = ap.parse_args(argv)
    autotune_cache.load(f"benchmarks/autotune/{torch.cuda.get_device_name().replace(' ', '_')}.json")
    ncu = args.ncu
    for D, N, B, inputs in cases(args.case):
        q, k, v = (t.requires_grad_() for t in make_inputs(inputs, B, 16, N, D, True))
        do = torch.randn_like(q)
        for name in METHODS:
            fn, why = get_method(name, 1.5, True, N, D)
            if fn is None:
                print(f"{name}: {why}")
                continue
            if ncu:
                for _ in range(3):
                    fwd_bwd(fn, q, k, v, do)
                torch.cuda.synchronize()
                torch.cuda.profiler.start()
                fwd_bwd(fn, q, k, v, do)
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
                continue
            per = profile(fn, q, k, v, do)
            print(f"== {name} D{D} N{N} B{B} {inputs} causal: total {sum(per.values()):.3f} ms per f+b")
            for kname, ms in sorted(per.items(), key=lambda kv: -kv[1]):
                if ms >= 0.005:
                    print(f"  {ms:8.3f}  {kname[:90]}")


if __name__ == "__main__":
    main(sys.argv[1:])
