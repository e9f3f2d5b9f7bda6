"""A small language model trained three ways on the Python standard library's source: softmax, entmax α = 1.5, and
a learnable α per head, with the same tokens and steps; then validation loss at the training length and at 4× and
16× it, the learned α, the sparsity per layer, and (on a GPU) the whole model's training step time at long
contexts, entmax against softmax in the same run.

    python examples/train_lm.py --quick               # CPU, about two minutes: the pipeline end to end
    python examples/train_lm.py --out examples/results/train_lm   # one GPU (the full mode)

The variants can also train side by side (`--variants softmax --speed-lengths` in one process, `--variants
entmax15 --speed-lengths` in another, ...; examples/parts.py), then `--variants` with no names gathers them and
`--variants --speed-lengths 8192 16384` measures the step times alone on the GPU.

Data: every .py file of this Python's standard library, bytes as tokens (vocabulary 256, no tokenizer to
download); a fixed held-out split by file (a file is held out when the CRC32 of its path is 0 mod 20). Model: a
Llama-style decoder with rotary position embeddings (RoPE): positions enter only as relative rotations, so the
same weights run at lengths never trained on, which is what the 4× / 16× evaluation asks; absolute learned
positions would not exist there. Training resumes from the last checkpoint of each variant in --out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

import entflash.integrations.transformers as eft  # registers attn_implementation="entmax"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parts import (  # noqa: E402
    add_time_limit, end_step, load_curve, load_parts, log_curve, optimizer, resume, save_part, set_lr,
    write_results,
)

VARIANTS = ("softmax", "entmax15", "learned")


def stdlib_bytes(max_bytes=None):
    """(train, validation) uint8 tensors of the standard library's .py files, split by file (the corpus of the
    benchmark's trained inputs, entflash.bench.trained)."""
    from entflash.bench.trained import corpus

    tr, va = corpus()
    if max_bytes:
        tr, va = tr[:max_bytes], va[:max_bytes // 10]
    return tr, va


def build(variant, cfg_kw, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the same initial weights for every variant
    impl = "sdpa" if variant == "softmax" else "entmax"
    model = LlamaForCausalLM._from_config(LlamaConfig(**cfg_kw), attn_implementation=impl).to(device)
    if variant == "learned":
        eft.make_alpha_learnable(model, init=1.5)
    return model


def batches(data, batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        s = torch.randint(0, len(data) - length - 1, (batch,), generator=g)
        yield torch.stack([data[i:i + length] for i in s.tolist()]).long()


@torch.no_grad()
def val_loss(model, data, length, n_windows, device):
    """Mean next-byte loss (nats) over n_windows evenly spaced validation windows of `length` bytes."""
    model.eval()
    starts = torch.linspace(0, len(data) - length - 1, n_windows).long().tolist()
    total = 0.0
    for s in starts:
        x = data[s:s + length].long()[None].to(device)
        total += model(input_ids=x, labels=x).loss.item()
    model.train()
    return total / len(starts)


def train(variant, args, cfg_kw, train_data, device, out_dir):
    """Train one variant (resuming from its checkpoint); returns the model and the steps it has trained."""
    model = build(variant, cfg_kw, device)
    opt = optimizer(model, args.lr, args.alpha_lr, weight_decay=0.1)
    step0 = resume(out_dir, variant, model, opt, device)
    data = batches(train_data, args.batch, args.length, seed=1)
    for _ in range(step0):  # the same batches as an uninterrupted run
        next(data)
    sched = lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa: E731
    t0, done = time.time(), step0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu",
                                                                                                      enabled=False)
    for step in range(step0, args.steps):
        done = step + 1
        set_lr(opt, sched(step))
        x = next(data).to(device)
        with autocast:
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            rate = (step + 1 - step0) / max(time.time() - t0, 1e-9)
            print(f"{variant}: step {step + 1}/{args.steps} loss {loss.item():.3f} ({rate:.1f} steps/s)", flush=True)
            log_curve(out_dir, variant, step + 1, loss.item())
        if end_step(args, out_dir, variant, model, opt, step + 1, t0):
            break
    return model, done


def step_time(variant, cfg_kw, length, device, reps=5):
    """Median time (ms) of one training step (bf16 autocast, batch 1) of a fresh model at `length` tokens."""
    model = build(variant, dict(cfg_kw, max_position_embeddings=max(length, cfg_kw["max_position_embeddings"])),
                  device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (1, length), device=device)
    times = []
    for i in range(reps + 2):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for v in VARIANTS:
        pts = sorted((int(n), x) for n, x in results["val_loss"][v].items())
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
    axes[0].set(xscale="log", xlabel="evaluation length (bytes)", ylabel="validation loss (nats/byte)",
                title=f"trained at {results['config']['length']}")
    axes[0].legend()
    for v in ("entmax15", "learned"):
        sp = results["sparsity"][v]
        axes[1].plot(range(len(sp)), [sum(r["block_sparsity"]) / len(r["block_sparsity"]) for r in sp], marker="o",
                     label=f"{v}: empty 64x64 blocks")
        axes[1].plot(range(len(sp)), [sum(r["zero_fraction"]) / len(r["zero_fraction"]) for r in sp], marker="x",
                     ls="--", label=f"{v}: zero weights")
    axes[1].set(xlabel="layer", ylabel="fraction", ylim=(0, 1), title="sparsity at the training length",
                xticks=range(len(results["sparsity"]["entmax15"])))
    axes[1].legend(fontsize=7)
    for v in VARIANTS:
        curve = results.get("train_loss", {}).get(v) or []
        axes[2].plot([c[0] for c in curve], [c[1] for c in curve], label=v, lw=1,
                     marker="o" if len(curve) < 20 else None)
    axes[2].set(xlabel="step", ylabel="training loss (nats/byte)", title="training loss (the same batches)")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny model on the CPU, about two minutes")
    ap.add_argument("--out", default="train_lm_out", help="checkpoints, results.json, results.png")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--length", type=int, default=None, help="training context (bytes)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha-lr", type=float, default=1e-2)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=500)
    add_time_limit(ap)
    ap.add_argument("--variants", nargs="*", choices=VARIANTS, default=VARIANTS,
                    help="the variants to train and evaluate (default all; none: only gather results.json)")
    ap.add_argument("--speed-lengths", type=int, nargs="*", default=None, help="lengths of the step-time comparison "
                    "(GPU only; default 8192 16384; none to skip)")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    if args.quick:
        cfg_kw = dict(vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
        args.steps, args.length, args.batch = args.steps or 60, args.length or 64, args.batch or 8
        args.log_every = min(args.log_every, 20)
        train_data, val_data = stdlib_bytes(max_bytes=2_000_000)
        n_val = 4
    else:
        cfg_kw = dict(vocab_size=256, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=16384)
        args.steps, args.length, args.batch = args.steps or 3000, args.length or 1024, args.batch or 32
        train_data, val_data = stdlib_bytes()
        n_val = 16
    os.makedirs(args.out, exist_ok=True)
    print(f"train_lm: {len(train_data)/1e6:.1f} MB train, {len(val_data)/1e6:.1f} MB validation; {device}; "
          f"{args.steps} steps of {args.batch} x {args.length} bytes; variants {list(args.variants)}", flush=True)
    lengths = [args.length * f for f in (1, 4, 16)]
    for v in args.variants:
        model, done = train(v, args, cfg_kw, train_data, device, args.out)
        part = {"steps": done,
                "val_loss": {str(n): val_loss(model, val_data, n, max(1, n_val // (n // args.length)), device)
                             for n in lengths}}
        if v != "softmax":
            with eft.SparsityMonitor(model) as mon, torch.no_grad():
                model.eval()
                for s in torch.linspace(0, len(val_data) - args.length - 1, n_val).long().tolist():
                    model(input_ids=val_data[s:s + args.length].long()[None].to(device))
            part["sparsity"] = mon.summary()
            part["alpha"] = eft.learned_alpha(model)
        print(f"{v}: validation loss " + ", ".join(f"{n}: {x:.3f}" for n, x in part["val_loss"].items()), flush=True)
        save_part(args.out, v, part)
        del model
    speed_lengths = args.speed_lengths if args.speed_lengths is not None else (8192, 16384)
    if device == "cuda" and speed_lengths:
        speed = {"device": torch.cuda.get_device_name()}
        for n in speed_lengths:
            t_soft, t_ent = step_time("softmax", cfg_kw, n, device), step_time("entmax15", cfg_kw, n, device)
            speed[str(n)] = {"softmax_ms": t_soft, "entmax15_ms": t_ent, "ratio": t_ent / t_soft}
            print(f"training step at {n} tokens: softmax {t_soft:.1f} ms, entmax {t_ent:.1f} ms "
                  f"({t_ent / t_soft:.2f}x)", flush=True)
        save_part(args.out, "step_time", speed)
    parts = load_parts(args.out, VARIANTS + ("step_time",))
    runs = {v: p for v, p in parts.items() if v in VARIANTS}
    results = {"config": {**cfg_kw, "steps": args.steps, "length": args.length, "batch": args.batch,
                          "positions": "RoPE", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                          "torch": torch.__version__},
               "variants": list(runs),
               "steps_done": {v: p.get("steps", args.steps) for v, p in runs.items()},
               "val_loss": {v: p["val_loss"] for v, p in runs.items()},
               "train_loss": {v: load_curve(args.out, v) for v in runs},
               "sparsity": {v: p["sparsity"] for v, p in runs.items() if "sparsity" in p},
               "alpha": {v: p["alpha"] for v, p in runs.items() if "alpha" in p}}
    if "step_time" in parts:
        results["step_time"] = parts["step_time"]
    write_results(args.out, results, VARIANTS, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
