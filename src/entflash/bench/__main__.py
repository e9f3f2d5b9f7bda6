"""`python -m entflash.bench`: speed, sparsity and memory, side by side (docs/performance.md).

    python -m entflash.bench                       # the full sweep (D 64/128, N 4k/16k/64k, causal or not)
    python -m entflash.bench --skip-slow --budget-s 570   # the same, cut at 570 s (unmeasured rows marked skipped)
    python -m entflash.bench --d 64 --n 16384 --causal yes --inputs clustered random
    python -m entflash.bench --errors              # exactness report (N=1024, D=64) instead of timings
    python -m entflash.bench --targets             # only the cases of the speed targets, then the report
    python -m entflash.bench --suite paths         # the other paths a model takes (bench/paths.py)
    python -m entflash.bench --from-jsonl F.jsonl --plot   # no GPU: table, target report and plots of saved rows

AdaSplash's autotuning choices are cached in benchmarks/autotune/<gpu>.json
(autotune_cache.py): a second sweep on the same GPU does not re-tune, and a
sequence length with no recorded choice borrows the nearest recorded one's
(rows say autotune_borrowed_from_n; --tune-missing tunes instead).

Writes benchmarks/results/<date>-<gpu>.jsonl (one object per case and method),
prints a table, and with --plot draws PNGs next to the JSONL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

from . import autotune_cache
from .env import environment
from .inputs import make_inputs
from .methods import ALL_METHODS, get_method
from .targets import TARGET_CASES, target_report


def _bench(fn, grad_to_none=None, rep=100):
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=rep, grad_to_none=grad_to_none, return_mode="median")


def sparsity(q, k, alpha, causal, nblocks=8, block=64):
    """(element sparsity over all rows, 64x64-block sparsity on sampled query blocks), from entflash's τ."""
    import entflash

    B, H, N, D = q.shape
    st = entflash.entmax_attention(q, k, k, alpha=alpha, causal=causal, return_stats=True)
    vis = torch.arange(1, N + 1, device=q.device, dtype=torch.float64) if causal else torch.full((N,), float(N), device=q.device, dtype=torch.float64)
    elem = 1.0 - st.support.double().sum().item() / (B * H * vis.sum().item())
    g = torch.Generator(device="cpu").manual_seed(0)
    nz = tot = 0
    a = alpha - 1.0
    for h in sorted({0, H // 2, H - 1}):
        for qb in torch.randint(0, max(1, N // block), (nblocks,), generator=g).tolist():
            rows = slice(qb * block, min(N, (qb + 1) * block))
            x = (q[0, h, rows].float() @ k[0, h].float().T) * (a / math.sqrt(D))
            i = torch.arange(rows.start, rows.stop, device=q.device)[:, None]
            j = torch.arange(N, device=q.device)[None, :]
            visible = (j <= i) if causal else torch.ones_like(x, dtype=torch.bool)
            on = (x > st.tau[0, h, rows, None]) & visible
            nb = math.ceil(N / block)
            pad = nb * block - N
            onb = torch.nn.functional.pad(on, (0, pad)).view(on.shape[0], nb, block).any(-1).any(0)
            visb = torch.nn.functional.pad(visible, (0, pad)).view(on.shape[0], nb, block).any(-1).any(0)
            nz += onb.sum().item()
            tot += visb.sum().item()
    return elem, 1.0 - nz / max(tot, 1)


def run_case(method, D, N, causal, inputs, alpha=1.5, H=16, tokens=32768, dtype=torch.bfloat16, rep=100, window=None):
    B = max(1, tokens // N)
    fn, why = get_method(method, alpha, causal, N, D, window)
    row = {"method": method, "D": D, "N": N, "B": B, "H": H, "causal": causal, "inputs": inputs, "alpha": alpha,
           "dtype": str(dtype).replace("torch.", "")}
    if window is not None:
        row["window"] = list(window)
    if fn is None:
        row["skipped"] = why
        return row
    q, k, v = make_inputs(inputs, B, H, N, D, causal, dtype=dtype)
    try:
        with torch.no_grad():
            row["fwd_ms"] = _bench(lambda: fn(q, k, v), rep=rep)
        qg, kg, vg = [t.clone().requires_grad_() for t in (q, k, v)]
        dout = torch.randn_like(q)

        def step():
            fn(qg, kg, vg).backward(dout)

        row["fwdbwd_ms"] = _bench(step, grad_to_none=[qg, kg, vg], rep=rep)
        torch.cuda.synchronize()
        for t in (qg, kg, vg):
            t.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        row["peak_extra_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        flops = 4 * B * H * N * N * D * (0.5 if causal else 1.0)
        row["fwd_tflops"] = round(flops / row["fwd_ms"] * 1e-9, 1)
        row["fwdbwd_tflops"] = round(3.5 * flops / row["fwdbwd_ms"] * 1e-9, 1)
    except Exception as e:  # report, do not hide: the row says what failed
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    torch.cuda.empty_cache()
    return row


def sweep_rows(cases, methods, measure, budget_s=None, clock=time.monotonic, skip=lambda method, N: False):
    """The sweep's rows in order: measure(case, method) for each case and method, unless the method is
    skipped (skip(method, N): no row) or the time budget is spent, in which case the row is written with
    "skipped" saying so, so that a sweep cut short still lists every case it did not measure. A measured row
    gets its wall time in "wall_s"."""
    t0 = clock()
    for case in cases:
        for method in methods:
            if skip(method, case[1]):
                continue
            if budget_s is not None and clock() - t0 > budget_s:
                D, N, causal, inputs = case
                yield {"method": method, "D": D, "N": N, "causal": causal, "inputs": inputs,
                       "skipped": f"time budget of {budget_s:g} s used up before this case"}
                continue
            t = clock()
            row = measure(case, method)
            # the row's own wall time (compiles, autotuning, sparsity, memory and both timings): where a
            # sweep's minutes go
            row["wall_s"] = round(clock() - t, 1)
            yield row


def errors_report(N=1024, D=64, H=8):
    """Relative L2 error of out and dq against float64 sort-based entmax-1.5 (the exactness table of docs/performance.md)."""
    from entflash.reference import naive_entmax_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, H, N, D, device="cuda", generator=g, dtype=torch.float64) for _ in range(3))
    dout = torch.randn(1, H, N, D, device="cuda", generator=g, dtype=torch.float64)
    for causal in (False, True):
        q64, k64, v64 = (t.clone().requires_grad_() for t in (q, k, v))
        ref = naive_entmax_attention(q64, k64, v64, alpha=1.5, causal=causal)
        ref.backward(dout)
        for method in ("entflash", "adasplash_v1", "adasplash_v2"):
            fn, why = get_method(method, 1.5, causal, N, D)
            for dt in (torch.bfloat16, torch.float16, torch.float32):
                r = {"kind": "errors", "method": method, "causal": causal, "dtype": str(dt).replace("torch.", ""), "N": N, "D": D}
                if fn is None:
                    r["skipped"] = why
                    yield r
                    break
                if method == "adasplash_v2" and dt == torch.float32:
                    # on the H200 this call did not finish within the report's 200 s, after every other causal row
                    # had: recorded as skipped, not run
                    r["skipped"] = "v2 float32 did not finish within 200 s on the H200"
                    yield r
                    continue
                try:
                    ql, kl, vl = (t.detach().to(dt).requires_grad_() for t in (q, k, v))
                    out = fn(ql, kl, vl)
                    out.backward(dout.to(dt))
                    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
                    r.update(out_rel_l2=rel(out, ref), dq_rel_l2=rel(ql.grad, q64.grad), dk_rel_l2=rel(kl.grad, k64.grad),
                             dv_rel_l2=rel(vl.grad, v64.grad))
                except Exception as e:
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                yield r


def _table(rows):
    cud = {}
    for r in rows:
        if r.get("method") == "sdpa_cudnn" and "fwd_ms" in r:
            cud[(r["D"], r["N"], r["causal"], r["inputs"])] = r
    lines = [f"{'D':>4} {'N':>6} {'causal':>6} {'inputs':>9} {'method':>13} {'fwd ms':>9} {'f+b ms':>9} "
             f"{'fwd xcuDNN':>10} {'f+b xcuDNN':>10} {'blk sp':>7} {'MiB':>7}"]
    for r in rows:
        if r.get("kind") == "errors":
            continue
        key = (r["D"], r["N"], r["causal"], r["inputs"])
        c = cud.get(key)
        if "fwd_ms" not in r:
            lines.append(f"{r['D']:>4} {r['N']:>6} {str(r['causal']):>6} {r['inputs']:>9} {r['method']:>13}  "
                         f"{r.get('skipped') or r.get('error', '')}")
            continue
        rf = f"{r['fwd_ms'] / c['fwd_ms']:.2f}" if c else "-"
        rb = f"{r['fwdbwd_ms'] / c['fwdbwd_ms']:.2f}" if c else "-"
        bs = r.get("block_sparsity")
        lines.append(f"{r['D']:>4} {r['N']:>6} {str(r['causal']):>6} {r['inputs']:>9} {r['method']:>13} "
                     f"{r['fwd_ms']:>9.3f} {r['fwdbwd_ms']:>9.3f} {rf:>10} {rb:>10} "
                     f"{(f'{bs:.1%}' if bs is not None else '-'):>7} {r.get('peak_extra_mib', '-'):>7}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m entflash.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--n", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--causal", nargs="+", default=["yes", "no"], choices=["yes", "no"])
    ap.add_argument("--inputs", nargs="+", default=["clustered", "random"], choices=["clustered", "random"])
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS))
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32768, help="B*N")
    ap.add_argument("--rep", type=int, default=100, help="do_bench repetition time (ms)")
    ap.add_argument("--skip-slow", action="store_true", help="skip adasplash_v1 beyond N=16384 (it takes seconds per call)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop measuring after this many seconds: the remaining (case, method) rows are written as skipped")
    ap.add_argument("--errors", action="store_true", help="exactness report instead of timings")
    ap.add_argument("--autotune-cache", default=None, metavar="FILE",
                    help="JSON of the compared libraries' autotuning choices, restored before and recorded after each "
                         "row (default benchmarks/autotune/<gpu>.json; 'none' to tune from scratch)")
    ap.add_argument("--tune-missing", action="store_true",
                    help="tune AdaSplash at sequence lengths with no recorded choice (minutes per head dim at "
                         "N=65536) instead of borrowing the nearest recorded length's choice (autotune_cache.borrow)")
    ap.add_argument("--out", default=None, help="JSONL path (default benchmarks/results/<date>-<gpu>.jsonl)")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--targets", action="store_true", help="run only the cases of the speed targets")
    ap.add_argument("--suite", choices=["targets", "paths"], default=None,
                    help="targets: the long-context speed targets (as --targets); paths: learned and general α, short "
                         "sequences, inference forward, decoding, chunked prefill and trained attention (bench/paths.py)")
    ap.add_argument("--skip-trained", action="store_true",
                    help="paths suite without the trained-attention cases (they train a model on first use)")
    ap.add_argument("--cases", nargs="+", default=None, metavar="TEXT",
                    help="paths suite: only the cases whose name contains one of these (e.g. decode 'short N512')")
    ap.add_argument("--window-row", action="store_true",
                    help="entflash with a (4096, 0) window against the full causal call at D64 N65536 (clustered and "
                         "random), then the ratio")
    ap.add_argument("--from-jsonl", nargs="+", default=None, metavar="FILE",
                    help="report on saved rows instead of benchmarking (no GPU needed)")
    args = ap.parse_args(argv)
    if args.from_jsonl:
        rows = [json.loads(line) for f in args.from_jsonl for line in open(f) if line.strip()]
        # the paths suite's rows have their own report (forward-only cases carry no fwdbwd_ms)
        main_rows = [r for r in rows if r.get("suite") != "paths"]
        if main_rows:
            print(_table(main_rows))
            print()
            print(target_report(main_rows))
        if any(r.get("suite") == "paths" for r in rows):
            from .paths import paths_report

            print()
            print(paths_report(rows))
        if args.plot:
            prefix = os.path.splitext(args.from_jsonl[0])[0]
            if main_rows:
                from .plots import plot_rows

                plot_rows(main_rows, prefix)
            if any(r.get("suite") == "paths" for r in rows):
                from .paths import plot_paths

                plot_paths(rows, prefix + "-ratio.png")
        return 0
    if not torch.cuda.is_available():
        print("entflash.bench needs a CUDA GPU", file=sys.stderr)
        return 2
    env = environment()
    out = args.out or os.path.join("benchmarks", "results", f"{env['date']}-{env['gpu'].replace(' ', '_')}.jsonl")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    rows = []
    with open(out, "a") as fh:

        def emit(r):
            """A measured row: tagged with the environment, kept, appended to the JSONL file and printed."""
            r.update(env)
            rows.append(r)
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            print(json.dumps(r), flush=True)

        if args.errors:
            for r in errors_report():
                emit(r)
            return 0
        if args.window_row:
            for inputs in ("clustered", "random"):
                pair = [run_case("entflash", 64, 65536, True, inputs, H=args.heads, rep=args.rep, window=w)
                        for w in (None, (4096, 0))]
                for r in pair:
                    emit(r)
                if all("fwdbwd_ms" in r for r in pair):
                    print(f"window (4096, 0) / full causal, D64 N65536 {inputs}: fwd "
                          f"{pair[1]['fwd_ms'] / pair[0]['fwd_ms']:.3f}x, fwd+bwd "
                          f"{pair[1]['fwdbwd_ms'] / pair[0]['fwdbwd_ms']:.3f}x", flush=True)
            return 0
        if args.suite == "paths":
            from .paths import copy_bandwidth, path_cases, paths_report, run_path_case

            bandwidth = copy_bandwidth()
            print(f"copy bandwidth: {bandwidth / 1e9:.2f} TB/s (read + write)", flush=True)
            cases = path_cases(skip_trained=args.skip_trained)
            if args.cases:
                cases = [c for c in cases if any(t in c.name for t in args.cases)]
                if not cases:
                    names = sorted({c.name for c in path_cases()})
                    ap.error(f"--cases {args.cases} matches no case of the paths suite; its cases: {names}")
            for case in cases:
                for method in ("entflash",) + case.compare:
                    r = run_path_case(case, method, rep=args.rep, bandwidth=bandwidth)
                    emit(r)
            print(paths_report(rows))
            if args.plot:
                from .paths import plot_paths

                plot_paths(rows, os.path.splitext(out)[0] + "-ratio.png")
            return 0
        if args.targets or args.suite == "targets":
            cases = TARGET_CASES
        else:
            cases = [(D, N, c == "yes", inputs) for D in args.d for N in args.n for c in args.causal
                     for inputs in args.inputs]
        spars = {}
        tune_file = None if args.autotune_cache == "none" else (
            args.autotune_cache or os.path.join("benchmarks", "autotune", f"{env['gpu'].replace(' ', '_')}.json"))
        print(f"autotune cache: {autotune_cache.load(tune_file)} choices restored from {tune_file}", flush=True)
        if tune_file and not args.tune_missing:
            for n, src in sorted(autotune_cache.borrow(sorted({c[1] for c in cases})).items()):
                print(f"autotune cache: no choice recorded at N={n}: AdaSplash uses the one tuned at N={src}")

        def measure(case, method):
            D, N, causal, inputs = case
            if case not in spars:  # from entflash's τ; written on every row of the case
                q, k, _ = make_inputs(inputs, 1, args.heads, N, D, causal)
                spars[case] = sparsity(q, k, args.alpha, causal)
                del q, k
            r = run_case(method, D, N, causal, inputs, alpha=args.alpha, H=args.heads, tokens=args.tokens,
                         rep=args.rep)
            r["elem_sparsity"], r["block_sparsity"] = round(spars[case][0], 4), round(spars[case][1], 4)
            borrowed = autotune_cache.borrowed_from(N) if method.startswith("adasplash") else []
            if borrowed:
                r["autotune_borrowed_from_n"] = borrowed
            autotune_cache.save(tune_file)
            return r

        t0 = time.monotonic()
        for r in sweep_rows(cases, args.methods, measure, args.budget_s,
                            skip=lambda method, N: args.skip_slow and method == "adasplash_v1" and N > 16384):
            emit(r)
    print(_table(rows))
    print(f"\nsweep: {len(rows)} rows ({sum('fwd_ms' in r for r in rows)} measured) in {time.monotonic() - t0:.0f} s")
    print()
    print(target_report(rows))
    if args.plot:
        from .plots import plot_rows

        plot_rows(rows, os.path.splitext(out)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
