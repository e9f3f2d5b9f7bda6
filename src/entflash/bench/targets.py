"""The long-context speed targets: ratios to cuDNN SDPA measured in the same run, and the AdaSplash-2 check."""

from __future__ import annotations

# (D, N, causal, inputs, "fwd" | "fwdbwd", goal ratio to cuDNN)
TARGETS = [
    (64, 16384, True, "clustered", "fwdbwd", 0.40),
    (64, 16384, True, "clustered", "fwd", 0.80),
    (64, 16384, True, "random", "fwdbwd", 1.30),
    (64, 16384, False, "clustered", "fwdbwd", 0.50),
    (128, 16384, True, "clustered", "fwdbwd", 0.40),
    (64, 65536, True, "clustered", "fwdbwd", 0.35),
]

TARGET_CASES = sorted({t[:4] for t in TARGETS}, key=lambda c: (c[1], c[0], not c[2], c[3]))


def _key(r):
    return (r.get("gpu"), r.get("commit"), r.get("date"), r["D"], r["N"], r["causal"], r["inputs"])


def target_report(rows) -> str:
    """One line per target and run: entflash / cuDNN ratio, the goal, met or not, and entflash vs AdaSplash-2."""
    by = {}
    for r in rows:
        if r.get("kind") == "errors" or "fwd_ms" not in r:
            continue
        by.setdefault(_key(r), {})[r["method"]] = r
    lines = [f"{'case':<34} {'metric':<7} {'entflash/cuDNN':>14} {'goal':>6} {'met':>4} {'vs AdaSplash-2':>15}  run"]
    for D, N, causal, inputs, metric, goal in TARGETS:
        case = f"D{D} N{N} {'causal' if causal else 'full'} {inputs}"
        found = False
        for key, meth in sorted(by.items(), key=lambda kv: str(kv[0])):
            if key[3:] != (D, N, causal, inputs) or "entflash" not in meth or "sdpa_cudnn" not in meth:
                continue
            found = True
            col = metric + "_ms"
            ratio = meth["entflash"][col] / meth["sdpa_cudnn"][col]
            v2 = meth.get("adasplash_v2")
            vs = f"{meth['entflash'][col] / v2[col]:.2f}x" if v2 and col in v2 else "-"
            lines.append(f"{case:<34} {metric:<7} {ratio:>13.2f}x {goal:>5.2f}x {'yes' if ratio <= goal else 'no':>4} "
                         f"{vs:>15}  {key[1]} {key[2]}")
        if not found:
            lines.append(f"{case:<34} {metric:<7} {'not measured':>14} {goal:>5.2f}x")
    return "\n".join(lines)
