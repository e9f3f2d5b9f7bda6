"""`entflash probe MODEL TEXT`: how sparse a Hugging Face model's entmax attention is on the user's own text.

The model runs with attn_implementation="entmax" (at --alpha, or at the α its config holds, learned ones
included) on passages of the requested lengths cut from the text; a SparsityMonitor records, per layer and head,
the mean support size, the fraction of exactly-zero weights and the fraction of empty 64×64 blocks. The speed to
expect at those lengths is estimated from a committed benchmark baseline (the row at the nearest block sparsity,
head dim and length: an estimate, with the GPU it was measured on), or measured with --measure on a GPU (the
whole model's forward with entmax against the same model with "sdpa").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional


TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".json", ".csv", ".c", ".h", ".js", ".html", ".tex")


@dataclass
class Passages:
    ids: List[int]
    source: str  # how the text became tokens


def read_text(path: str) -> str:
    """The text of a file, or of every text file under a folder (sorted, concatenated)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"text path {path!r} does not exist (give a text file or a folder of text files)")
    if p.is_file():
        return p.read_text(errors="replace")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
    if not files:
        raise ValueError(f"folder {path!r} holds no text file ({', '.join(TEXT_SUFFIXES)})")
    return "\n".join(f.read_text(errors="replace") for f in files)


def tokenize(model_path: str, text: str, vocab_size: int) -> Passages:
    """Token ids of the text: the model's tokenizer where the checkpoint has one, else bytes (the byte-level models
    the examples train: byte values below vocab_size)."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        return Passages(tok(text, add_special_tokens=False)["input_ids"], f"tokenizer {type(tok).__name__}")
    except (OSError, ValueError, TypeError, KeyError):
        data = text.encode("utf-8", errors="replace")
        if vocab_size < 256:
            raise ValueError(f"{model_path!r} has no tokenizer and a vocabulary of {vocab_size} < 256: cannot feed "
                             "it bytes")
        return Passages(list(data), "bytes (no tokenizer in the checkpoint)")


def load_model(path: str, alpha: Optional[float], device: str):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    import entflash.integrations.transformers as eft

    if not os.path.isdir(path):
        raise FileNotFoundError(f"model path {path!r} is not a folder holding a Hugging Face checkpoint (config.json "
                                "and weights; nothing is downloaded)")
    cfg = AutoConfig.from_pretrained(path)
    loader = AutoModelForCausalLM if getattr(cfg, "is_decoder", False) or cfg.architectures and any(
        a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in cfg.architectures) else AutoModel
    model = loader.from_pretrained(path, attn_implementation="entmax").to(device).eval()
    eft.attention_modules(model)  # raises for a model whose attention ignores attn_implementation
    if alpha is not None:
        if not 1.0 <= alpha <= 2.0:
            raise ValueError(f"--alpha must lie in [1, 2], got {alpha}")
        model.config.entmax_alpha = float(alpha)
    return model


def estimate_speed(rows, head_dim: int, length: int, block_sparsity: float):
    """entflash / cuDNN forward+backward from the baseline row closest in block sparsity among the entflash rows of
    the nearest head dim and length (causal), with cuDNN's row of the same case: (ratio, description) or None."""
    ent = [r for r in rows if r.get("method") == "entflash" and "fwdbwd_ms" in r and r.get("block_sparsity") is not None]
    cud = {(r["D"], r["N"], r["causal"], r["inputs"]): r for r in rows
           if r.get("method") == "sdpa_cudnn" and "fwdbwd_ms" in r}
    ent = [r for r in ent if (r["D"], r["N"], r["causal"], r["inputs"]) in cud]
    if not ent:
        return None
    D = min({r["D"] for r in ent}, key=lambda d: abs(d - head_dim))
    N = min({r["N"] for r in ent if r["D"] == D}, key=lambda n: abs(math.log2(n) - math.log2(max(length, 1))))
    near = min((r for r in ent if r["D"] == D and r["N"] == N and r["causal"]),
               key=lambda r: abs(r["block_sparsity"] - block_sparsity), default=None)
    if near is None:
        return None
    c = cud[(near["D"], near["N"], near["causal"], near["inputs"])]
    ratio = near["fwdbwd_ms"] / c["fwdbwd_ms"]
    return ratio, (f"estimate: {ratio:.2f}x cuDNN forward+backward, from the {near.get('gpu', '?')} baseline row D{D} "
                   f"N{N} causal at {near['block_sparsity']:.0%} empty blocks")


def default_baseline() -> Optional[str]:
    """The committed baseline of the repository this package runs from (benchmarks/results/h200/bench.jsonl)."""
    p = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "h200" / "bench.jsonl"
    return str(p) if p.exists() else None
