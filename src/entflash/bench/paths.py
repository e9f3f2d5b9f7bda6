"""The "paths" suite: the calls real models make besides long-context training, each next to what it must beat.

    python -m entflash.bench --suite paths            # every case (the trained-input cases train the model once)
    python -m entflash.bench --suite paths --skip-trained

Cases (bf16; ms of forward, or forward+backward where the path trains):
- trained attention: every layer of bench/trained.py's model, D64 N16k causal, B2 H16, against cuDNN;
- learned per-head α (a tensor that needs its gradient: all heads 1.5, or drawn in [1.25, 1.95]) and float α 1.25
  and 1.75, D64 N16k causal, against the float α = 1.5 call on the same inputs (and cuDNN);
- short sequences: N 512 non-causal B64, N 1024 causal B32, N 2048 both B16 (H12 D64), against cuDNN;
- inference forward, D64 N16k causal, against cuDNN's forward;
- decoding: one new query per sequence, B16, 32 query and 8 KV heads, D128, caches of 4096 and 32768, against the
  floor of reading K and V once (their bytes over the copy bandwidth measured in the same run) and torch SDPA's
  flash kernel (KV expanded to 32 heads); also per-sequence cache lengths (varlen);
- chunked prefill: 256 new queries against the same caches, against SDPA flash (KV expanded).

Rows carry "suite": "paths", the case name, "alpha" as given (a float or "per-head [lo, hi]"), Nq, cache_len and,
for decoding, floor_ms; paths_report() prints each case's ratio next to its goal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

PER_HEAD_EQUAL = ("per-head", 1.5, 1.5)
PER_HEAD_MIXED = ("per-head", 1.25, 1.95)


@dataclass(frozen=True)
class PathCase:
    name: str
    D: int
    B: int
    H: int
    Hkv: int
    Nq: int
    Nk: int
    causal: bool
    inputs: str
    alpha: object = 1.5  # a float, or ("per-head", lo, hi)
    backward: bool = True
    compare: Tuple[str, ...] = ("sdpa_cudnn",)  # methods measured beside entflash
    goal: Optional[Tuple[str, float]] = None  # (what the ratio is taken against, the largest ratio that meets it)
    varlen_cache: bool = False
    extra: dict = field(default_factory=dict)

    def alpha_label(self):
        return alpha_label(self.alpha)


def alpha_label(a):
    """α as the rows give it: a float, or "per-head [lo, hi]"."""
    return f"per-head [{a[1]}, {a[2]}]" if isinstance(a, tuple) else a


def path_cases(trained_layers=4, skip_trained=False):
    """The suite's cases (module docstring), in order."""
    cases = []
    if not skip_trained:
        for layer in range(trained_layers):
            cases.append(PathCase(f"trained layer {layer}", 64, 2, 16, 16, 16384, 16384, True, f"trained:{layer}",
                                  goal=("sdpa_cudnn", 0.8)))
    for inputs in ("clustered", "random"):
        for alpha, goal in ((PER_HEAD_EQUAL, 1.05), (PER_HEAD_MIXED, 1.3), (1.25, 1.3), (1.75, 1.3)):
            cases.append(PathCase(f"alpha {alpha_label(alpha)}", 64, 2, 16, 16, 16384, 16384, True, inputs, alpha,
                                  compare=("entflash_a15", "sdpa_cudnn"), goal=("entflash_a15", goal)))
    for N, B, causal in ((512, 64, False), (1024, 32, True), (2048, 16, False), (2048, 16, True)):
        for inputs in ("random", "clustered"):
            cases.append(PathCase(f"short N{N} {'causal' if causal else 'non-causal'}", 64, B, 12, 12, N, N, causal,
                                  inputs, goal=("sdpa_cudnn", 1.2 if inputs == "random" else 1.0)))
    for inputs, goal in (("clustered", 0.8), ("random", 2.0)):
        cases.append(PathCase("inference forward", 64, 2, 16, 16, 16384, 16384, True, inputs, backward=False,
                              goal=("sdpa_cudnn", goal)))
    for cache in (4096, 32768):
        for inputs in ("random", "clustered"):
            cases.append(PathCase(f"decode cache {cache}", 128, 16, 32, 8, 1, cache, True, inputs, backward=False,
                                  compare=("sdpa_flash_kv",), goal=("floor", 1.0)))
        cases.append(PathCase(f"decode cache {cache} varlen", 128, 16, 32, 8, 1, cache, True, "random",
                              backward=False, compare=(), goal=("floor", 1.0), varlen_cache=True))
        cases.append(PathCase(f"prefill 256 on cache {cache}", 128, 16, 32, 8, 256, cache, True, "random",
                              backward=False, compare=("sdpa_flash_kv",), goal=("sdpa_flash_kv", 1.2)))
    return cases


def _inputs(case: PathCase):
    """q (B, H, Nq, D), k, v (B, Hkv, Nk, D) of the case."""
    from .inputs import make_inputs

    if case.inputs.startswith("trained"):
        return make_inputs(case.inputs, case.B, case.H, case.Nq, case.D, case.causal)
    if case.Nq == case.Nk and case.H == case.Hkv:
        return make_inputs(case.inputs, case.B, case.H, case.Nq, case.D, case.causal)
    # decode / prefill: the cache is the keys; the new queries are the cache's last rows' continuation
    _, k, v = make_inputs(case.inputs, case.B, case.Hkv, case.Nk, case.D, case.causal)
    q_all, _, _ = make_inputs(case.inputs, case.B, case.H, case.Nk, case.D, case.causal, seed=1)
    return q_all[:, :, -case.Nq:].contiguous(), k, v


def _alpha(case: PathCase, device):
    if isinstance(case.alpha, tuple):
        _, lo, hi = case.alpha
        g = torch.Generator().manual_seed(0)
        a = lo + (hi - lo) * torch.rand(case.H, generator=g) if hi > lo else torch.full((case.H,), lo)
        return a.to(device).requires_grad_()
    return case.alpha


def _method(name, case: PathCase, alpha):
    import torch.nn.functional as F

    import entflash

    G = case.H // case.Hkv
    if name == "entflash":
        if case.varlen_cache:
            return _varlen_decode(case, alpha)
        return lambda q, k, v: entflash.entmax_attention(q, k, v, alpha=alpha, causal=case.causal)
    if name == "entflash_a15":
        return lambda q, k, v: entflash.entmax_attention(q, k, v, alpha=1.5, causal=case.causal)
    if name == "sdpa_cudnn":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def f(q, k, v):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)
        return f
    if name == "sdpa_flash_kv":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.attention.bias import causal_lower_right

        def f(q, k, v):
            k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
                if case.Nq == 1:
                    return F.scaled_dot_product_attention(q, k, v)
                return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(case.Nq, case.Nk))
        return f
    raise ValueError(f"unknown method {name!r}")


def _varlen_decode(case: PathCase, alpha):
    """entmax_attention_varlen with per-sequence cache lengths spread over (cache / 4, cache]."""
    import entflash

    g = torch.Generator().manual_seed(0)
    lens = torch.randint(case.Nk // 4, case.Nk + 1, (case.B,), generator=g)

    def f(q, k, v):
        dev = q.device
        kk = torch.cat([k[b, :, :n].transpose(0, 1) for b, n in enumerate(lens.tolist())])
        vv = torch.cat([v[b, :, :n].transpose(0, 1) for b, n in enumerate(lens.tolist())])
        cu_k = torch.cat([torch.zeros(1, dtype=torch.int32), lens.cumsum(0).to(torch.int32)]).to(dev)
        cu_q = torch.arange(case.B + 1, dtype=torch.int32, device=dev)
        qq = q[:, :, 0].contiguous()  # (B, H, D): one token per sequence
        return lambda: entflash.entmax_attention_varlen(qq, kk, vv, cu_q, cu_k, 1, case.Nk, alpha=alpha,
                                                        causal=True, check_offsets=False)
    return f


def copy_bandwidth(nbytes=1 << 30):
    """Bytes per ms that one device-to-device copy of nbytes moves (read plus write) on this GPU."""
    from triton.testing import do_bench

    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=10, rep=50, return_mode="median")
    return 2 * nbytes / ms


def run_path_case(case: PathCase, method: str, rep=100, bandwidth=None):
    """One row of the suite: timings of `method` on `case` (forward, and forward+backward when case.backward)."""
    from triton.testing import do_bench

    row = {"suite": "paths", "case": case.name, "method": method, "D": case.D, "N": case.Nk, "Nq": case.Nq,
           "cache_len": case.Nk if case.Nq != case.Nk else None, "B": case.B, "H": case.H, "Hkv": case.Hkv,
           "causal": case.causal, "inputs": case.inputs, "alpha": case.alpha_label(), "dtype": "bfloat16"}
    try:
        q, k, v = _inputs(case)
        alpha = _alpha(case, q.device)
        fn = _method(method, case, alpha)
        if case.varlen_cache:
            call = fn(q, k, v)
            row["fwd_ms"] = do_bench(call, warmup=25, rep=rep, return_mode="median")
        else:
            row["fwd_ms"] = do_bench(lambda: fn(q, k, v), warmup=25, rep=rep, return_mode="median")
        if case.backward:
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
            dout = torch.randn_like(q)
            grads = [qg, kg, vg] + ([alpha] if isinstance(alpha, torch.Tensor) else [])
            row["fwdbwd_ms"] = do_bench(lambda: fn(qg, kg, vg).backward(dout), warmup=25, rep=rep, grad_to_none=grads,
                                        return_mode="median")
        if case.goal and case.goal[0] == "floor":
            kv_bytes = 2 * case.B * case.Hkv * case.Nk * case.D * 2
            if case.varlen_cache:
                g = torch.Generator().manual_seed(0)
                lens = torch.randint(case.Nk // 4, case.Nk + 1, (case.B,), generator=g)
                kv_bytes = int(2 * case.Hkv * lens.sum().item() * case.D * 2)
            row["kv_bytes"] = kv_bytes
            row["floor_ms"] = kv_bytes / (bandwidth or copy_bandwidth())
    except Exception as e:  # the row says what failed
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    torch.cuda.empty_cache()
    return row


def path_ratios(rows):
    """Per measured case: (name, inputs, alpha, entflash ms, yardstick ms, ratio, goal), or (name, inputs, alpha,
    what went wrong) where entflash has no time."""
    by = {}
    for r in rows:
        if r.get("suite") == "paths":
            by.setdefault((r.get("gpu"), r.get("commit"), r["case"], r["inputs"]), {})[r["method"]] = r
    # a case's goal can depend on its inputs (short sequences, inference forward): look cases up by both
    cases = {(c.name, c.inputs): c for c in path_cases()}
    for (_, _, name, inputs), meth in by.items():
        e = meth.get("entflash")
        case = cases.get((name, inputs))
        if e is None or case is None or case.goal is None:
            continue
        col = "fwdbwd_ms" if case.backward else "fwd_ms"
        what, goal = case.goal
        if col not in e:
            yield name, inputs, e["alpha"], e.get("error", "not measured")
            continue
        base = e.get("floor_ms") if what == "floor" else meth.get(what, {}).get(col)
        yield name, inputs, e["alpha"], e[col], base, (e[col] / base if base else math.nan), goal


def paths_report(rows) -> str:
    """Per case: entflash's time, its ratio to the case's yardstick, the goal, met or not."""
    lines = [f"{'case':<34} {'inputs':<10} {'alpha':<22} {'entflash ms':>14} {'yardstick':>14} {'ratio':>7} "
             f"{'goal':>6} {'met':>4}"]
    for row in path_ratios(rows):
        name, inputs, alpha = row[:3]
        if len(row) == 4:
            lines.append(f"{name:<34} {inputs:<10} {str(alpha):<22} {row[3]}")
            continue
        ms, base, ratio, goal = row[3:]
        lines.append(f"{name:<34} {inputs:<10} {str(alpha):<22} {ms:>14.3f} {(base or math.nan):>14.3f} "
                     f"{ratio:>6.2f}x {goal:>5.2f}x {'yes' if ratio <= goal else 'no':>4}")
    return "\n".join(lines)


def plot_paths(rows, path: str):
    """A PNG of every case's ratio to its yardstick (log scale) beside its goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    got = [r for r in path_ratios(rows) if len(r) == 7]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(got) + 1.2))
    labels = [f"{r[0]} ({r[1]})" for r in got]
    ratios = [r[5] for r in got]
    colors = ["tab:green" if r[5] <= r[6] else "tab:red" for r in got]
    y = range(len(got))
    ax.barh(y, ratios, color=colors)
    ax.scatter([r[6] for r in got], y, marker="|", s=200, color="k", label="goal", zorder=3)
    ax.axvline(1.0, color="gray", lw=0.8)
    ax.set(yticks=list(y), xscale="log", xlabel="entflash time / the case's yardstick (green: goal met)")
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
