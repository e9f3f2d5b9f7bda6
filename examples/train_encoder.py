"""A small ModernBERT-style encoder trained with masked-language modelling on the Python standard library's source,
softmax against entmax α = 1.5, evaluated on a held-out task built from the same corpus: recovering masked
identifiers (every byte of a whole identifier hidden at once) in files never seen in training.

    python examples/train_encoder.py --quick                        # CPU, about a minute
    python examples/train_encoder.py --out examples/results/encoder # one GPU

Training resumes from each variant's last checkpoint in --out; the variants can train in separate processes
(`--variants softmax`, `--variants entmax15`) and `--variants` with no names gathers results.json
(examples/parts.py).

The encoder is transformers' ModernBERT (pre-norm, rotary positions, every third layer global and the others
attending within a 128-token window, which entflash takes as a window): a post-norm BERT of the same size stayed at
the byte frequencies (MLM loss ~3.1 nats: 1500 steps at full size without warm-up, 800 at d 128 with it), where this
one learns. Bytes are tokens (vocabulary 256 + a mask and a padding token); the split by file is train_lm.py's.
Training masks 15% of the bytes as BERT does; the evaluation masks identifiers (runs of letters, digits and
underscores that start with a letter or underscore, 3 to 20 bytes) and scores the bytes of each masked identifier
(accuracy per byte and per whole identifier). Also reported: the SparsityMonitor's sparsity per layer of the entmax
model.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

import torch

import entflash.integrations.transformers as eft

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parts import (  # noqa: E402
    add_time_limit, end_step, load_curve, load_parts, log_curve, resume, save_part, write_results,
)
from train_lm import stdlib_bytes  # noqa: E402

MASK, PAD = 256, 257
VARIANTS = ("softmax", "entmax15")
IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{2,19}")


def build(variant, cfg_kw, device):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    impl = "sdpa" if variant == "softmax" else "entmax"
    cfg = ModernBertConfig(**cfg_kw, vocab_size=258, pad_token_id=PAD, bos_token_id=None, eos_token_id=None,
                           cls_token_id=None, sep_token_id=None, global_attn_every_n_layers=3)
    return ModernBertForMaskedLM._from_config(cfg, attn_implementation=impl).to(device)


def mlm_batch(data, batch, length, g):
    s = torch.randint(0, len(data) - length - 1, (batch,), generator=g)
    x = torch.stack([data[i:i + length] for i in s.tolist()]).long()
    masked = torch.rand(x.shape, generator=g) < 0.15
    labels = torch.where(masked, x, torch.full_like(x, -100))
    inputs = torch.where(masked, torch.full_like(x, MASK), x)
    return inputs, labels


def identifier_windows(data, length, n):
    """n windows of the held-out bytes with every identifier of their middle third masked: (inputs, labels,
    identifier spans)."""
    raw = bytes(data.tolist())
    out = []
    for s in torch.linspace(0, len(raw) - length - 1, n).long().tolist():
        x = torch.tensor(list(raw[s:s + length]), dtype=torch.long)
        labels = torch.full_like(x, -100)
        spans = []
        for m in IDENT.finditer(raw[s + length // 3:s + 2 * length // 3]):
            a, b = m.start() + length // 3, m.end() + length // 3
            labels[a:b] = x[a:b]
            spans.append((a, b))
        inputs = torch.where(labels >= 0, torch.full_like(x, MASK), x)
        out.append((inputs, labels, spans))
    return out


@torch.no_grad()
def evaluate(model, windows, device):
    model.eval()
    right = total = whole = idents = 0
    for inputs, labels, spans in windows:
        pred = model(input_ids=inputs[None].to(device)).logits[0].argmax(-1).cpu()
        ok = (pred == labels) & (labels >= 0)
        right += ok.sum().item()
        total += (labels >= 0).sum().item()
        whole += sum(bool(ok[a:b].all()) for a, b in spans)
        idents += len(spans)
    model.train()
    return {"byte_accuracy": right / max(total, 1), "identifier_accuracy": whole / max(idents, 1),
            "identifiers": idents}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(results["eval"])
    axes[0].bar(names, [results["eval"][v]["identifier_accuracy"] for v in names])
    axes[0].set(ylabel="whole identifiers recovered", ylim=(0, 1), title="held-out masked identifiers")
    sp = results["sparsity"]["entmax15"]
    axes[1].bar(range(len(sp)), [sum(r["zero_fraction"]) / len(r["zero_fraction"]) for r in sp])
    axes[1].set(xlabel="layer", ylabel="exactly-zero weights", ylim=(0, 1), title="entmax 1.5 sparsity",
                xticks=range(len(sp)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny model on the CPU, about a minute")
    ap.add_argument("--out", default="train_encoder_out")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--length", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--variants", nargs="*", choices=VARIANTS, default=VARIANTS,
                    help="the variants to train and evaluate (default both; none: only gather results.json)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=500)
    add_time_limit(ap)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    if args.quick:
        cfg_kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                      max_position_embeddings=512, local_attention=64)
        args.steps, args.length, args.batch = args.steps or 60, args.length or 128, args.batch or 8
        train_data, val_data = stdlib_bytes(max_bytes=2_000_000)
        n_eval = 8
        args.log_every = min(args.log_every, 20)
    else:
        cfg_kw = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                      max_position_embeddings=1024, local_attention=128)
        args.steps, args.length, args.batch = args.steps or 3000, args.length or 512, args.batch or 32
        train_data, val_data = stdlib_bytes()
        n_eval = 128
    os.makedirs(args.out, exist_ok=True)
    windows = identifier_windows(val_data, args.length, n_eval)
    for v in args.variants:
        model = build(v, cfg_kw, device)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        g = torch.Generator().manual_seed(1)
        step0 = resume(args.out, v, model, opt, device)
        for _ in range(step0):  # the same batches as an uninterrupted run
            mlm_batch(train_data, args.batch, args.length, g)
        t0, done = time.time(), step0
        for step in range(step0, args.steps):
            done = step + 1
            # warm-up, then cosine decay
            for grp in opt.param_groups:
                grp["lr"] = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            inputs, labels = mlm_batch(train_data, args.batch, args.length, g)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = model(input_ids=inputs.to(device), labels=labels.to(device)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
                print(f"{v}: step {step + 1}/{args.steps} loss {loss.item():.3f} "
                      f"({(step + 1 - step0) / (time.time() - t0):.1f} steps/s)", flush=True)
                log_curve(args.out, v, step + 1, loss.item())
            if end_step(args, args.out, v, model, opt, step + 1, t0):
                break
        part = {"eval": evaluate(model, windows, device), "steps": done}
        if v != "softmax":
            with eft.SparsityMonitor(model) as mon, torch.no_grad():
                for inputs, _, _ in windows:
                    model(input_ids=inputs[None].to(device))
            part["sparsity"] = mon.summary()
        e = part["eval"]
        print(f"{v}: masked identifiers, byte accuracy {e['byte_accuracy']:.3f}, whole identifiers "
              f"{e['identifier_accuracy']:.3f} ({e['identifiers']})", flush=True)
        save_part(args.out, v, part)
        del model
    parts = load_parts(args.out, VARIANTS)
    results = {"config": {**cfg_kw, "steps": args.steps, "length": args.length, "batch": args.batch,
                          "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                          "torch": torch.__version__},
               "variants": list(parts),
               "steps_done": {v: p.get("steps", args.steps) for v, p in parts.items()},
               "train_loss": {v: load_curve(args.out, v) for v in parts},
               "eval": {v: p["eval"] for v, p in parts.items()},
               "sparsity": {v: p["sparsity"] for v, p in parts.items() if "sparsity" in p}}
    write_results(args.out, results, VARIANTS, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
