"""The benchmark's report path (no GPU): table, speed-target report and plots from saved JSONL rows."""

import json

from entflash.bench.__main__ import main
from entflash.bench.targets import TARGETS, target_report


def _row(method, D, N, causal, inputs, fwd, fwdbwd, commit="abc"):
    return {"method": method, "D": D, "N": N, "B": 1, "H": 16, "causal": causal, "inputs": inputs, "fwd_ms": fwd,
            "fwdbwd_ms": fwdbwd, "gpu": "G", "commit": commit, "date": "2026-11-28", "block_sparsity": 0.97,
            "elem_sparsity": 0.99, "peak_extra_mib": 1.0}


def test_target_report_ratios_and_verdicts():
    rows = [
        _row("sdpa_cudnn", 64, 16384, True, "clustered", 2.0, 10.0),
        _row("entflash", 64, 16384, True, "clustered", 1.0, 3.0),  # 0.50x fwd (goal 0.80: met), 0.30x f+b (met)
        _row("adasplash_v2", 64, 16384, True, "clustered", 4.0, 6.0),
        _row("sdpa_cudnn", 64, 16384, True, "random", 2.0, 10.0),
        _row("entflash", 64, 16384, True, "random", 9.0, 20.0),  # 2.00x f+b (goal 1.30: not met)
        _row("entflash", 64, 16384, True, "random", 1.0, 1.0, commit="other"),  # no cuDNN in that run: ignored
    ]
    rep = target_report(rows).splitlines()
    assert len(rep) == 1 + len(TARGETS)
    clustered_fb = next(line for line in rep if "causal clustered" in line and "fwdbwd" in line and "D64 N16384" in line)
    assert "0.30x" in clustered_fb and " yes " in clustered_fb and "0.50x" in clustered_fb  # vs AdaSplash-2: 3/6
    clustered_f = next(line for line in rep if "causal clustered" in line and " fwd " in line)
    assert "0.50x" in clustered_f and " yes " in clustered_f
    random_fb = next(line for line in rep if "random" in line)
    assert "2.00x" in random_fb and " no " in random_fb
    assert sum("not measured" in line for line in rep) == 3


def test_from_jsonl_cli_prints_and_plots(tmp_path, capsys):
    f = tmp_path / "run.jsonl"
    rows = [_row("sdpa_cudnn", 128, 16384, True, "clustered", 3.0, 14.0), _row("entflash", 128, 16384, True, "clustered", 4.0, 6.0)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    plot = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = False
    assert main(["--from-jsonl", str(f)] + (["--plot"] if plot else [])) == 0
    out = capsys.readouterr().out
    assert "0.43x" in out  # 6 / 14
    if plot:
        assert (tmp_path / "run-ratio.png").exists() and (tmp_path / "run-time.png").exists()


def test_sweep_time_budget_lists_what_it_did_not_measure():
    """sweep_rows: once the budget is spent every remaining (case, method) is still written, marked skipped; the
    skip rule drops rows entirely; the table and the target report accept the skipped rows."""
    from entflash.bench.__main__ import _table, sweep_rows

    now = [0.0]
    measured = []

    def measure(case, method):
        measured.append((case, method))
        now[0] += 10.0  # each measurement takes 10 s of the fake clock
        D, N, causal, inputs = case
        return _row(method, D, N, causal, inputs, 1.0, 2.0)

    cases = [(64, 4096, True, "clustered"), (64, 16384, True, "random"), (128, 65536, False, "clustered")]
    methods = ["entflash", "sdpa_cudnn", "adasplash_v1"]
    rows = list(sweep_rows(cases, methods, measure, budget_s=25.0, clock=lambda: now[0],
                           skip=lambda method, N: method == "adasplash_v1" and N > 16384))
    assert len(rows) == 8  # 3 + 3 + 2 (adasplash_v1 at N 65536 skipped entirely)
    assert len(measured) == 3  # at 0, 10 and 20 s; at 30 s the 25 s budget is spent
    assert [r["wall_s"] for r in rows[:3]] == [10.0, 10.0, 10.0]
    late = rows[3:]
    assert all("time budget" in r["skipped"] and "fwd_ms" not in r for r in late)
    assert {(r["D"], r["N"], r["causal"], r["inputs"], r["method"]) for r in late} == {
        (64, 16384, True, "random", m) for m in methods} | {(128, 65536, False, "clustered", m) for m in methods[:2]}
    assert "time budget" in _table(rows)
    assert len(target_report(rows).splitlines()) == 1 + len(TARGETS)
    # no budget: everything measured
    now[0] = 0.0
    measured.clear()
    assert len(list(sweep_rows(cases, methods, measure))) == 9 and len(measured) == 9


def test_autotune_cache_roundtrip(tmp_path, monkeypatch):
    """The recorded autotuning choices come back into an autotuner's cache under the same key, with the same
    configuration; keys already tuned in this process are kept; a file from another library is ignored."""
    import sys
    import types

    import triton
    import triton.language as tl

    from entflash.bench import autotune_cache

    @triton.autotune(configs=[triton.Config({"BLOCK": 32}, num_warps=2), triton.Config({"BLOCK": 64}, num_warps=4)],
                     key=["N"])
    @triton.jit
    def kern(X, N, BLOCK: tl.constexpr):
        pass

    mod = types.ModuleType("adasplash_fake_for_test")
    mod.kern = kern
    monkeypatch.setitem(sys.modules, "adasplash_fake_for_test", mod)
    key = (4096, 64, "torch.bfloat16")
    kern.cache[key] = triton.Config({"BLOCK": 64}, num_warps=4, num_stages=3)
    path = tmp_path / "tune.json"
    assert autotune_cache.save(str(path)) == 1
    kern.cache.clear()
    kern.cache[(16384, 64, "torch.bfloat16")] = triton.Config({"BLOCK": 32}, num_warps=2, num_stages=2)
    assert autotune_cache.load(str(path)) == 1
    c = kern.cache[key]
    assert (c.kwargs, c.num_warps, c.num_stages) == ({"BLOCK": 64}, 4, 3)
    assert kern.cache[(16384, 64, "torch.bfloat16")].kwargs == {"BLOCK": 32}  # not overwritten
    assert autotune_cache.save(str(path)) == 2  # merged with the file
    assert autotune_cache.load(str(tmp_path / "missing.json")) == 0


def test_autotune_cache_borrow(tmp_path, monkeypatch):
    """A sequence length with no recorded choice gets the nearest recorded length's choice for the same other
    key parts (never another head dim's), is reported, and is not written back to the file as tuned."""
    import json
    import sys
    import types

    import triton

    from entflash.bench import autotune_cache

    @triton.autotune(configs=[triton.Config({}, num_warps=2), triton.Config({}, num_warps=4),
                              triton.Config({}, num_warps=8)], key=["N_CTX", "H_DIM"])
    @triton.jit
    def kern(X, N_CTX, H_DIM):
        pass

    mod = types.ModuleType("adasplash_fake_borrow")
    mod.kern = kern
    monkeypatch.setitem(sys.modules, "adasplash_fake_borrow", mod)
    monkeypatch.setattr(autotune_cache, "_borrowed", {})
    kern.cache[(4096, 64, "torch.bfloat16")] = triton.Config({}, num_warps=2)
    kern.cache[(16384, 64, "torch.bfloat16")] = triton.Config({}, num_warps=4)
    kern.cache[(4096, 128, "torch.bfloat16")] = triton.Config({}, num_warps=8)
    assert autotune_cache.borrow([4096, 16384, 65536]) == {16384: [4096], 65536: [4096, 16384]}
    assert kern.cache[(65536, 64, "torch.bfloat16")].num_warps == 4  # nearest recorded N at D=64
    assert kern.cache[(65536, 128, "torch.bfloat16")].num_warps == 8  # D=128's only choice, not D=64's
    assert kern.cache[(16384, 128, "torch.bfloat16")].num_warps == 8
    assert autotune_cache.borrowed_from(65536) == [4096, 16384] and autotune_cache.borrowed_from(4096) == []
    path = tmp_path / "tune.json"
    assert autotune_cache.save(str(path)) == 3
    keys = [e["key"][:2] for e in json.load(open(path))["adasplash_fake_borrow.kern"]]
    assert sorted(keys) == [[4096, 64], [4096, 128], [16384, 64]]


def test_paths_suite_cases_and_report():
    """The paths suite lists every path with its yardstick and goal, and its report divides by the right one
    (the floor for decoding, the float α = 1.5 call for α cases, cuDNN elsewhere)."""
    from entflash.bench.paths import path_cases, paths_report

    cases = path_cases()
    names = {c.name for c in cases}
    for expected in ("trained layer 3", "alpha per-head [1.5, 1.5]", "alpha 1.25", "short N512 non-causal",
                     "inference forward", "decode cache 32768", "decode cache 4096 varlen", "prefill 256 on cache 4096"):
        assert expected in names
    assert not any(c.inputs.startswith("trained") for c in path_cases(skip_trained=True))
    decode = next(c for c in cases if c.name == "decode cache 32768")
    assert (decode.Nq, decode.Nk, decode.H, decode.Hkv, decode.D, decode.backward) == (1, 32768, 32, 8, 128, False)
    rows = [
        {"suite": "paths", "case": "decode cache 32768", "inputs": "random", "method": "entflash", "alpha": 1.5,
         "fwd_ms": 1.5, "floor_ms": 0.75},
        {"suite": "paths", "case": "alpha 1.25", "inputs": "random", "method": "entflash", "alpha": 1.25,
         "fwd_ms": 5.0, "fwdbwd_ms": 12.0},
        {"suite": "paths", "case": "alpha 1.25", "inputs": "random", "method": "entflash_a15", "alpha": 1.5,
         "fwd_ms": 4.0, "fwdbwd_ms": 10.0},
    ]
    report = paths_report(rows)
    assert "decode cache 32768" in report and " 2.00x  1.00x   no" in report
    assert " 1.20x  1.30x  yes" in report
