"""`entflash demo`: what α-entmax attention does, on a sentence small enough to read.

Two attention heads are built by hand over one sentence so that their maps have a known pattern: a
same-word head (a repeated word attends to its earlier copies) and a previous-token head. The maps
are computed with the public API on the CPU for softmax (α = 1), entmax-1.5 and sparsemax (α = 2).
On a machine with CUDA the Triton kernels then run on a long random sequence, checked against the
torch path and timed next to torch's softmax attention.
"""

from __future__ import annotations

import math

import torch

import entflash

SENTENCE = "the cat sat on the mat because the mat was warm and the cat slept".split()
HEADS = ("same-word head", "previous-token head")
ALPHAS = {1.0: "softmax", 1.5: "entmax-1.5", 2.0: "sparsemax"}
TITLE = "entflash demo: softmax vs alpha-entmax attention on one sentence"
SHADES = " .:-=+*o#%@"  # ' ' is exactly zero, then one character per tenth of weight
PLOT_HINT = 'plotting needs matplotlib: pip install "entflash[plot]" (or pip install matplotlib)'

# Scores after the default 1/sqrt(D) scaling. entmax-1.5 gives a key exactly zero weight once its score is
# about 2 below the top one (sparsemax: 1), while softmax still gives it e^-2 of the top key's weight, so
# gaps of 2.5-5 make both behaviours visible.
SAME_WORD = 6.0  # a key holding the query's word
SELF_PENALTY = 3.0  # the query's own position, so that an earlier copy of the word wins over the token itself
PREVIOUS = 3.5  # the key just before the query
NOISE = 0.2  # a little of everything else in the embeddings, as in a trained model


def example_qkv(words=SENTENCE, dim: int = 64, seed: int = 0):
    """q, k of shape (1, 2, N, dim) for the two hand-built heads, and v = one-hot keys (1, 2, N, N).

    Each token is x = word embedding + position embedding (+ noise), with word and position embeddings
    orthonormal so that a head can read one and ignore the other; q = x Wq and k = x Wk per head:
      same-word head:      q.k = SAME_WORD * [same word] - SELF_PENALTY * [same position]
      previous-token head: q.k = PREVIOUS * [key position = query position - 1]
    With v the identity, the attention output is the attention weight matrix itself.
    """
    g = torch.Generator().manual_seed(seed)
    vocab = sorted(set(words))
    n = len(words)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    word_emb, pos_emb = basis[:, : len(vocab)], basis[:, len(vocab) : len(vocab) + n]  # columns are codes
    ids = torch.tensor([vocab.index(w) for w in words])
    x = word_emb[:, ids].T + pos_emb.T + NOISE * torch.randn(n, dim, generator=g) / math.sqrt(dim)

    on_words = word_emb @ word_emb.T  # projections onto the word and position subspaces
    on_positions = pos_emb @ pos_emb.T
    to_previous = pos_emb[:, :-1] @ pos_emb[:, 1:].T  # maps the code of position i to that of i - 1
    # scale Wq so that q.k / sqrt(dim) scores 1 per unit of the formulas above
    wq = [SAME_WORD * on_words - SELF_PENALTY * on_positions, PREVIOUS * to_previous]
    wk = [on_words + on_positions, on_positions]
    q = torch.stack([x @ w.T for w in wq])[None] * math.sqrt(dim)
    k = torch.stack([x @ w.T for w in wk])[None]
    v = torch.eye(n).expand(1, len(wq), n, n).contiguous()
    return q, k, v


def call_text(alpha: float) -> str:
    return f'entflash.entmax_attention(q, k, v, alpha={alpha}, causal=True, backend="torch")'


def attention_maps(q, k, v, alpha: float):
    """(weights (H, N, N), support (H, N)) through the public API; weights = output since v is one-hot."""
    out, _, support = entflash.entmax_attention(q, k, v, alpha=alpha, causal=True, backend="torch", return_stats=True)
    return out[0], support[0]


def shade(p: float) -> str:
    if p <= 0.0:
        return SHADES[0]
    return SHADES[min(len(SHADES) - 1, 1 + int(p * 10))]


def shading_legend() -> str:
    steps = [f"'{c}' < {(i + 1) / 10:.1f}" for i, c in enumerate(SHADES[1:-1])]
    return f"shading: '{SHADES[0]}' = exactly 0, " + ", ".join(steps) + f", '{SHADES[-1]}' >= 0.9"


def text_maps(maps, words, titles) -> str:
    """Attention maps side by side: a row per query word, a column per key (word written top to bottom)."""
    label = max(len(w) for w in words) + 2
    width = 2 * len(words)  # two characters per key: closer to square cells in a terminal
    gap = " " * 4
    lines = [" " * label + gap.join(t.ljust(width) for t in titles)]
    for depth in range(max(len(w) for w in words)):
        header = "".join((w[depth] if depth < len(w) else " ") + " " for w in words)
        lines.append(" " * label + gap.join(header for _ in maps))
    for i, w in enumerate(words):
        rows = ["".join(2 * shade(x) for x in p[i].tolist()) for p in maps]
        lines.append(w.rjust(label - 2) + "  " + gap.join(rows))
    return "\n".join(line.rstrip() for line in lines)


def sparsity_table(results, n: int) -> str:
    """Exactly-zero fraction (of the visible query-key pairs) and mean support size, per α and head."""
    visible = n * (n + 1) // 2
    lines = [
        f"exactly-zero weights among the {visible} visible (causal) query-key pairs, and mean support size",
        f"(keys with nonzero weight per query; {visible / n:.1f} visible on average):",
        f"  {'alpha':<16}" + "".join(f"{h:>26}" for h in HEADS),
    ]
    for alpha, (p, support) in results.items():
        cells = []
        for h in range(len(HEADS)):
            zeros = (p[h].tril() == 0).sum().item() - (n * n - visible)  # the future keys do not count
            cells.append(f"{zeros / visible:>14.0%} zero, {support[h].float().mean().item():4.2f}")
        lines.append(f"  {f'{alpha:g} ({ALPHAS[alpha]})':<16}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_plot(path: str, results, words) -> None:
    """PNG: a row per head, a column per α; exactly-zero weights in white, future keys in grey."""
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Figure + Agg canvas rather than pyplot: no display needed and no global backend switched
    fig = Figure(figsize=(5.2 * len(results), 4.6 * len(HEADS)), layout="constrained")
    FigureCanvasAgg(fig)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")  # masked (exactly zero) cells
    axes = fig.subplots(len(HEADS), len(results), squeeze=False)
    ticks = np.arange(len(words))
    n = len(words)
    future = np.zeros((n, n, 4))  # RGBA overlay: light grey over the keys that causal=True hides
    future[np.triu_indices(n, 1)] = (0.85, 0.85, 0.85, 1.0)
    for col, (alpha, (p, _)) in enumerate(results.items()):
        for row, head in enumerate(HEADS):
            ax = axes[row][col]
            weights = p[row].numpy()
            image = ax.imshow(np.ma.masked_equal(weights, 0.0), cmap=cmap, vmin=0.0, vmax=1.0)
            ax.imshow(future)
            ax.set_title(f"{head}, {ALPHAS[alpha]} (alpha={alpha:g})", fontsize=10)
            ax.set_xticks(ticks, words, rotation=90, fontsize=8)
            ax.set_yticks(ticks, words, fontsize=8)
            ax.set_xlabel("key")
            ax.set_ylabel("query")
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight (white: exactly 0; grey: future key)")
    fig.suptitle(f"causal attention over: {' '.join(words)}")
    fig.savefig(path, dpi=110)


def cpu_part(plot: str | None = None) -> int:
    words = SENTENCE
    q, k, v = example_qkv(words)
    print(TITLE)
    print(f"\nsentence ({len(words)} words): {' '.join(words)}")
    print(f"q, k: {tuple(q.shape)} (batch, heads, words, head_dim): two heads built by hand (demo.example_qkv)")
    print(f"v:    {tuple(v.shape)} one-hot per key, so each output row is that query's attention weights\n")
    print(call_text(1.5))
    print("  and the same with alpha=1.0 (softmax) and alpha=2.0 (sparsemax)\n")
    results = {alpha: attention_maps(q, k, v, alpha) for alpha in ALPHAS}
    blurbs = ("a repeated word attends to its earlier copies", "each word attends to the word before it")
    for h, (head, blurb) in enumerate(zip(HEADS, blurbs)):
        print(f"{head}: {blurb}")
        print(text_maps([results[a][0][h] for a in (1.0, 1.5)], words, ["softmax (alpha=1)", "entmax-1.5"]))
        print()
    print(shading_legend())
    print("softmax gives every visible key some weight; entmax-1.5 gives most of them exactly zero.\n")
    print(sparsity_table(results, len(words)))
    if plot:
        try:
            save_plot(plot, results, words)
        except OSError as e:
            print(f"\ncould not write the plot: {e}")
            return 1
        print(f"\nwrote {plot}")
    return 0


def _median_ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def gpu_part(rows: int = 8, tol: float = 5e-2) -> int:
    """The Triton kernels on a long causal sequence: sampled rows against the torch path, forward time vs SDPA."""
    B, H, N, D = 1, 16, 8192, 64
    print(f"\nGPU: {torch.cuda.get_device_name()}: Triton kernels, B={B} H={H} N={N} D={D} bf16, causal, alpha=1.5")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    with torch.no_grad():
        out = entflash.entmax_attention(q, k, v, alpha=1.5, causal=True)
        err = 0.0
        for r in torch.randint(0, N, (rows,), generator=torch.Generator().manual_seed(1)).tolist():
            # causal row r sees keys 0..r: a one-query, non-causal call on the torch path, in float32
            ref = entflash.entmax_attention(q[:, :, r : r + 1].float(), k[:, :, : r + 1].float(),
                                            v[:, :, : r + 1].float(), alpha=1.5, backend="torch")
            err = max(err, (out[:, :, r : r + 1].float() - ref).abs().max().item())
        ms = _median_ms(lambda: entflash.entmax_attention(q, k, v, alpha=1.5, causal=True))
        sdpa_ms = _median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    print(f"max |triton - torch| on {rows} sampled rows: {err:.2e} ({'ok' if err < tol else f'above {tol:g}'})")
    print(f"entflash forward {ms:.2f} ms; torch SDPA (softmax) {sdpa_ms:.2f} ms (median)")
    return 0 if err < tol else 1


def run_demo(gpu: bool = True, plot: str | None = None) -> int:
    status = cpu_part(plot)
    if status:
        return status
    if not torch.cuda.is_available():
        print("\nno CUDA GPU here: the Triton kernels run on a CUDA GPU; `pytest` runs them on the CPU under "
              "TRITON_INTERPRET=1")
        return 0
    if not gpu:
        print("\n(GPU part skipped: --cpu)")
        return 0
    return gpu_part()
