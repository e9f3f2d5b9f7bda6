"""Where a call's time goes, stage by stage, under the library's KernelOptions and under variants of them.

    PYTHONPATH=src python benchmarks/stage_times.py                      # D64 N16k B2 H16 causal, both inputs
    PYTHONPATH=src python benchmarks/stage_times.py --d 128 --n 4096 --alpha 1.3
    PYTHONPATH=src python benchmarks/stage_times.py --inputs trained:0 trained:2   # a trained model's layers
    PYTHONPATH=src python benchmarks/stage_times.py --variant tau_split=1 --variant dq_split=1,dq_full_tiles=False

For each case (head dim x sequence length x inputs) it times the forward's stages (pass 1, the τ pass, the
output pass) and the backward's kernels (dq, dk/dv) with triton.testing.do_bench (median), for the library's
options of this GPU and then for each --variant (KernelOptions fields changed, as name=value pairs joined by
commas), and reads the library's options once more at the end: the first and last rows differ by the drift of
the machine, the yardstick for a variant's difference. The τ pass rewrites the tile map pass 1 wrote, and
dk/dv reads the δ that dq writes, so stages are timed cumulatively (pass 1; pass 1 + τ; all three) and
reported as differences. Also printed: the share of (query block, key tile) pairs the output pass visits.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from triton.testing import do_bench

from entflash.bench.inputs import make_inputs
from entflash.kernels import configs
from entflash.kernels.launch import BackwardBuffers, Call, ForwardBuffers, Geometry, backward_stages, forward_stages


def parse_variant(text: str) -> dict:
    """'a=1,b=False' -> {"a": 1, "b": False}, checked against KernelOptions' fields."""
    fields = {f.name for f in dataclasses.fields(configs.KernelOptions)}
    out = {}
    for item in text.split(","):
        name, sep, val = item.partition("=")
        if not sep or name not in fields:
            raise argparse.ArgumentTypeError(f"--variant expects name=value pairs of KernelOptions fields "
                                             f"({', '.join(sorted(fields))}), got {item!r}")
        out[name] = None if val == "None" else (val == "True" if val in ("True", "False") else int(val))
    return out


def parse_inputs(text: str) -> str:
    """'clustered', 'random' or 'trained:<layer>' (the bench's trained model, bench/trained.py)."""
    kind, _, layer = text.partition(":")
    if text in ("clustered", "random") or (kind == "trained" and layer.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"--inputs accepts 'clustered', 'random' or 'trained:<layer>', got {text!r}")


def _run_all(stages):
    for _, launches in stages:
        for launch in launches:
            launch()


def time_case(opts, D, N, B, H, inputs, causal, alpha):
    """(pass 1, τ, output, dq, dk/dv) in ms and the visited share of tiles, for one case under `opts`."""
    q, k, v = make_inputs(inputs, B, H, N, D, causal)
    geo = Geometry(q, k, None, N, N, opts)
    call = Call(geo, q, k, None, alpha, None, None, None, causal, D ** -0.5)
    split = geo.split_tau(call.kind)
    fb = ForwardBuffers(geo, q, v, need_stats=False, split=split)
    fwd = forward_stages(call, q, k, v, fb, need_stats=False, split=split)
    cumulative = [lambda n=n: _run_all(fwd[:n]) for n in (1, 2, 3)]
    cumulative[-1]()
    NG = opts.n_groups
    hit = fb.tmax.view(B * H, geo.n_qblk, NG, geo.n_kblk) > fb.taumin.view(B * H, geo.n_qblk, NG, 1)
    visited = hit.any(2).float().mean().item()
    t = [do_bench(f, warmup=10, rep=40, return_mode="median") for f in cumulative]
    do = torch.randn_like(q)
    bb = BackwardBuffers(geo, q, k, v, need_dalpha=False)
    bwd = backward_stages(call, do, q, k, v, fb.out, fb.tau, fb.m, fb.tmax, fb.taumin, bb, need_dalpha=False)
    b = [do_bench(lambda n=n: _run_all(bwd[:n]), warmup=10, rep=40, return_mode="median") for n in (1, 2)]
    return [t[0], t[1] - t[0], t[2] - t[1], b[0], b[1] - b[0]], visited


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, nargs="+", default=[64], help="head dims")
    ap.add_argument("--n", type=int, nargs="+", default=[16384], help="sequence lengths")
    ap.add_argument("--b", type=int, default=None, help="batch (default 32768 // N: the bench's token count)")
    ap.add_argument("--h", type=int, default=16, help="heads")
    ap.add_argument("--inputs", nargs="+", type=parse_inputs, default=["clustered", "random"],
                    help="clustered, random, or trained:<layer> (D 64; a layer of the bench's trained model)")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--causal", choices=["yes", "no"], default="yes")
    ap.add_argument("--variant", type=parse_variant, action="append", default=[],
                    help="KernelOptions fields to change, e.g. tau_split=1,output_split=1 (repeatable)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    causal = args.causal == "yes"
    print(f"{torch.cuda.get_device_name()}: bf16, H={args.h}, {'causal' if causal else 'non-causal'}, "
          f"alpha={args.alpha}; ms (do_bench median)")
    print(f"{'case':<28} {'variant':<36} {'pass1':>7} {'tau':>7} {'output':>7} {'dq':>7} {'dkdv':>7} {'visited':>8}")
    for D in args.d:
        base = configs.for_device(torch.device("cuda"), torch.bfloat16, D)
        variants = [("library", {})] + [(",".join(f"{k}={v}" for k, v in var.items()), var) for var in args.variant]
        variants.append(("library (again)", {}))
        for N in args.n:
            B = args.b or max(1, 32768 // N)
            for inputs in args.inputs:
                for name, changes in variants:
                    t, visited = time_case(base.replace(**changes), D, N, B, args.h, inputs, causal, args.alpha)
                    case = f"D{D} N{N} B{B} {inputs}"
                    print(f"{case:<28} {name:<36} " + " ".join(f"{x:>7.3f}" for x in t) + f" {visited:>8.2%}",
                          flush=True)


if __name__ == "__main__":
    main()
