"""The "trained" benchmark inputs: q, k, v that a model learned, captured from every layer of a small decoder.

The model: a byte-level Llama-style decoder (4 layers, d 256, 4 heads of 64, RoPE) trained with entmax α = 1.5 on
the Python standard library's source (every .py file of the running Python; a file is held out when the CRC32 of
its path is 0 mod 20) at context 4096. The bench trains it on first use and caches it:

    python -m entflash.bench.trained            # train and cache (a few minutes on one H100 / H200)
    python -m entflash.bench.trained --check    # the cached model's validation loss

Inputs of layer l at length N: the model runs on N held-out bytes and its attention function records the queries
and keys after the rotary embedding, and the values; the 4 heads are tiled to the requested head count and the
batch repeats the passage, so a row of the bench sees the attention that layer learned (sparse per element,
scattered across tiles), not a synthetic pattern. A model saved in a checkout at benchmarks/trained_lm (e.g. the
one a baseline was measured on) is read when no cached one exists; cache_dir() says which model a run reads.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
import time
import zlib
from typing import Dict, Optional, Tuple

import torch

CONFIG = dict(vocab_size=256, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=65536)
TRAIN = dict(context=4096, batch=8, steps=6000, lr=1e-3, alpha=1.5)
HEAD_DIM = CONFIG["hidden_size"] // CONFIG["num_attention_heads"]


# a model kept with the repository's baselines (read in a checkout when no cached model exists)
COMMITTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir, "benchmarks",
                         "trained_lm")


def train_dir() -> str:
    """Where a newly trained model goes: $ENTFLASH_CACHE, else ~/.cache/entflash/trained_lm (never the committed
    model's folder)."""
    return os.environ.get("ENTFLASH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "entflash", "trained_lm")


def cache_dir() -> str:
    """Where the model is read from and trained into: $ENTFLASH_CACHE when set; else ~/.cache/entflash/trained_lm
    when it holds a model; else the repository's committed model (benchmarks/trained_lm) when this is a checkout;
    else ~/.cache/entflash/trained_lm (trained there on first use)."""
    home = train_dir()
    if home == os.environ.get("ENTFLASH_CACHE"):
        return home
    if not os.path.exists(os.path.join(home, "config.json")) and os.path.exists(os.path.join(COMMITTED, "config.json")):
        return os.path.normpath(COMMITTED)
    return home


def corpus() -> Tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) bytes of the standard library's .py files, split by file."""
    root = sysconfig.get_paths()["stdlib"]
    train, val = [], []
    for dirpath, dirnames, files in sorted(os.walk(root)):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                (val if zlib.crc32(rel.encode()) % 20 == 0 else train).append(open(os.path.join(dirpath, f),
                                                                                   "rb").read())
    cat = lambda parts: torch.frombuffer(bytearray(b"\n".join(parts)), dtype=torch.uint8)  # noqa: E731
    return cat(train), cat(val)


def _new_model(device, config=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    import entflash.integrations.transformers  # noqa: F401  (registers "entmax")

    torch.manual_seed(0)
    cfg = LlamaConfig(**(config or CONFIG), entmax_alpha=TRAIN["alpha"])
    return LlamaForCausalLM._from_config(cfg, attn_implementation="entmax").to(device)


def train(device: str = "cuda", steps: Optional[int] = None, context: Optional[int] = None, config=None,
          out: Optional[str] = None, log=print):
    """Train the model and save it (transformers' save_pretrained) to `out` (default: train_dir())."""
    steps, context = steps or TRAIN["steps"], context or TRAIN["context"]
    data, val = corpus()
    model = _new_model(device, config)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    t0 = time.time()
    for step in range(steps):
        lr = TRAIN["lr"] * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for grp in opt.param_groups:
            grp["lr"] = lr
        s = torch.randint(0, len(data) - context - 1, (TRAIN["batch"],), generator=g)
        x = torch.stack([data[i:i + context] for i in s.tolist()]).long().to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            log(f"trained model: step {step + 1}/{steps}, loss {loss.item():.3f}, {time.time() - t0:.0f} s")
    out = out or train_dir()
    model.save_pretrained(out)
    return model


def load(device: str = "cuda", path: Optional[str] = None, train_if_missing: bool = True):
    """The cached model (trained first when missing and train_if_missing)."""
    from transformers import LlamaForCausalLM

    import entflash.integrations.transformers  # noqa: F401

    path = path or cache_dir()
    if not os.path.exists(os.path.join(path, "config.json")):
        if not train_if_missing:
            raise FileNotFoundError(f"no trained model in {path}: run python -m entflash.bench.trained")
        print(f"trained inputs: no model in {path}; training it (python -m entflash.bench.trained)", flush=True)
        return train(device, out=path).eval()
    return LlamaForCausalLM.from_pretrained(path, attn_implementation="entmax").to(device).eval()


_captured: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _capture(module, query, key, value, attention_mask, **kwargs):
    """An attention function that records (q, k, v) per layer, then runs entmax attention."""
    from entflash.integrations.transformers import entmax_attention_forward

    _captured[module.layer_idx] = (query.detach(), key.detach(), value.detach())
    return entmax_attention_forward(module, query, key, value, attention_mask, **kwargs)


@torch.no_grad()
def capture_qkv(model, N: int, start: int = 0):
    """{layer: (q, k, v)} of the model on N held-out bytes from `start`, each (1, heads, N, head dim)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from entflash.integrations.transformers import entmax_mask

    _, val = corpus()
    if N + start > len(val):
        raise ValueError(f"trained inputs: N = {N} needs {N + start} held-out bytes, the corpus has {len(val)}")
    AttentionInterface.register("entmax_capture", _capture)
    AttentionMaskInterface.register("entmax_capture", entmax_mask)
    before = model.config._attn_implementation
    model.set_attn_implementation("entmax_capture")
    _captured.clear()
    try:
        device = next(model.parameters()).device
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(input_ids=val[start:start + N].long()[None].to(device))
    finally:
        model.set_attn_implementation(before)
    return dict(_captured)


def make_trained(layer: int, B: int, H: int, N: int, D: int, model=None, dtype=torch.bfloat16):
    """q, k, v (B, H, N, D) of `layer`: the model's heads tiled to H, the passage repeated over the batch."""
    if D != HEAD_DIM:
        raise ValueError(f"trained inputs have head dim {HEAD_DIM}, got D = {D}")
    model = model or load()
    q, k, v = capture_qkv(model, N)[layer]
    reps = math.ceil(H / q.shape[1])
    return tuple(t.repeat(B, reps, 1, 1)[:, :H].to(dtype).contiguous() for t in (q, k, v))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="report the cached model's validation loss")
    ap.add_argument("--out", default=None, help=f"where to save (default {train_dir()})")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.check:
        model = load(device, args.out, train_if_missing=False)
        _, val = corpus()
        with torch.no_grad():
            x = val[:TRAIN["context"]].long()[None].to(device)
            print(f"validation loss at {TRAIN['context']}: {model(input_ids=x, labels=x).loss.item():.3f} nats/byte")
        return 0
    if device != "cuda":
        print("training the benchmark model needs a CUDA GPU (it takes a few minutes there)", file=sys.stderr)
        return 2
    train(device, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
