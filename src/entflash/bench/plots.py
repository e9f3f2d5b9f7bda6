"""PNG plots of a benchmark run: time vs N, and the ratio to cuDNN vs block sparsity."""

from __future__ import annotations


def plot_rows(rows, prefix: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if "fwdbwd_ms" in r]
    cases = sorted({(r["D"], r["causal"], r["inputs"]) for r in timed})
    fig, axes = plt.subplots(1, max(1, len(cases)), figsize=(4 * max(1, len(cases)), 3.5), squeeze=False)
    for ax, (D, causal, inputs) in zip(axes[0], cases):
        for m in sorted({r["method"] for r in timed}):
            pts = sorted((r["N"], r["fwdbwd_ms"]) for r in timed if (r["D"], r["causal"], r["inputs"], r["method"]) == (D, causal, inputs, m))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set(xscale="log", yscale="log", xlabel="N", ylabel="fwd+bwd ms", title=f"D={D} {'causal' if causal else 'full'} {inputs}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(prefix + "-time.png", dpi=110)
    def case(r):  # ratios only within one run (commit) of one case
        return (r.get("commit"), r["D"], r["N"], r["causal"], r["inputs"])

    cud = {case(r): r for r in timed if r["method"] == "sdpa_cudnn"}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in sorted({r["method"] for r in timed} - {"sdpa_cudnn"}):
        pts = [(r["block_sparsity"], r["fwdbwd_ms"] / cud[k]["fwdbwd_ms"]) for r in timed
               if r["method"] == m and (k := case(r)) in cud and r.get("block_sparsity") is not None]
        if pts:
            ax.scatter(*zip(*pts), label=m, s=18)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="64x64 block sparsity", ylabel="fwd+bwd time / cuDNN", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(prefix + "-ratio.png", dpi=110)
