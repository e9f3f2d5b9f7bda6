"""`python -m entflash demo`: entmax vs softmax attention on a small built-in example.

Runs on the CPU (the torch path) everywhere; on a machine with CUDA it also
runs the Triton kernels on a long sequence and checks them against the torch
path.
"""

from __future__ import annotations

import math
import time

import torch

from .attention import entmax_attention

SENTENCE = "the cat sat on the mat because the cat was tired and the mat was warm".split()
SHADES = " .:-=+*#%@"


def _example(heads: int = 4, dim: int = 32, seed: int = 0):
    """q, k, v for SENTENCE: token embeddings plus a position signal, per-head projections."""
    g = torch.Generator().manual_seed(seed)
    vocab = sorted(set(SENTENCE))
    emb = torch.randn(len(vocab), dim, generator=g)
    ids = torch.tensor([vocab.index(w) for w in SENTENCE])
    n = len(SENTENCE)
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(100.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * freqs)
    pe[:, 1::2] = torch.cos(pos * freqs)
    x = emb[ids] + pe
    wq = torch.randn(heads, dim, dim, generator=g) / math.sqrt(dim)
    wk = torch.randn(heads, dim, dim, generator=g) / math.sqrt(dim)
    wv = torch.randn(heads, dim, dim, generator=g) / math.sqrt(dim)
    # head 0 matches tokens (q = k up to scale), the others are random projections
    wk[0] = wq[0]
    q = torch.einsum("nd,hde->hne", x, wq)[None] * 2.0
    k = torch.einsum("nd,hde->hne", x, wk)[None]
    v = torch.einsum("nd,hde->hne", x, wv)[None]
    return q, k, v


def _probs(q, k, alpha):
    """Attention probabilities via the public API: attend to one-hot values."""
    n = k.shape[2]
    eye = torch.eye(n, dtype=q.dtype).expand(1, k.shape[1], n, n)
    return entmax_attention(q, k, eye, alpha=alpha, causal=True, backend="torch")


def _text_map(p, words):
    width = max(len(w) for w in words)
    lines = [" " * (width + 1) + "".join(w[0] for w in words)]
    for i, w in enumerate(words):
        row = "".join(SHADES[min(len(SHADES) - 1, int(math.ceil(x * (len(SHADES) - 1))))] if x > 0 else " " for x in p[i].tolist())
        lines.append(w.rjust(width) + " " + row)
    return "\n".join(lines)


def run_demo(gpu: bool = True) -> int:
    torch.manual_seed(0)
    q, k, v = _example()
    H = q.shape[1]
    print("entflash demo: causal attention over a 16-word sentence, 4 heads, torch path on the CPU\n")
    print(f"{'alpha':>6} | " + " | ".join(f"head {h} zeros" for h in range(H)))
    maps = {}
    n = len(SENTENCE)
    visible = n * (n + 1) / 2
    for alpha in (1.0, 1.5, 2.0):
        p = _probs(q, k, alpha)[0]
        maps[alpha] = p
        zeros = [((p[h] == 0).sum().item() - (n * n - visible)) / visible for h in range(H)]
        print(f"{alpha:>6} | " + " | ".join(f"{z:>12.0%}" for z in zeros))
    print("\nfraction of visible (causal) query-key pairs with exactly zero weight; softmax (alpha=1) has none.")
    print("\nhead 0, softmax (alpha = 1): every visible key gets weight")
    print(_text_map(maps[1.0][0], SENTENCE))
    print("\nhead 0, entmax-1.5: most weights are exactly zero (blank)")
    print(_text_map(maps[1.5][0], SENTENCE))
    _, hh, nn, _ = q.shape
    stats = entmax_attention(q, k, v, alpha=1.5, causal=True, return_stats=True, backend="torch")
    print(f"\nmean support size per query (entmax-1.5): {stats.support.float().mean().item():.2f} of {(nn + 1) / 2:.1f} visible keys")
    if gpu and torch.cuda.is_available():
        return _gpu_part()
    print("\n(no CUDA device: the Triton kernels run on a GPU; `pytest` runs them on the CPU under TRITON_INTERPRET=1)")
    return 0


def _gpu_part() -> int:
    dev = "cuda"
    B, H, N, D = 1, 16, 8192, 64
    print(f"\nGPU: {torch.cuda.get_device_name()} — Triton kernels, B={B} H={H} N={N} D={D} bf16, causal, alpha=1.5")
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(3))
    out = entmax_attention(q, k, v, alpha=1.5, causal=True)
    rows = torch.randint(0, N, (8,), generator=torch.Generator().manual_seed(1)).tolist()
    # sampled rows against the torch path (causal row r sees keys 0..r)
    err = 0.0
    for r in rows:
        o_ref = entmax_attention(q[:, :, r : r + 1].float(), k[:, :, : r + 1].float(), v[:, :, : r + 1].float(), alpha=1.5, backend="torch")
        err = max(err, (out[:, :, r : r + 1].float() - o_ref).abs().max().item())
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        entmax_attention(q, k, v, alpha=1.5, causal=True)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / 10 * 1e3
    print(f"max |triton - torch| on 8 sampled rows: {err:.2e}; forward {ms:.2f} ms")
    return 0 if err < 5e-2 else 1
