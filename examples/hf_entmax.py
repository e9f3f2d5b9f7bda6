"""Switch a Hugging Face model to α-entmax attention, learn α per head for a few steps, and watch the sparsity.

    python examples/hf_entmax.py                          # a tiny random Llama, on the CPU, in seconds
    python examples/hf_entmax.py --model PATH --steps 50  # a local checkpoint (any model whose attention goes
                                                          # through transformers' AttentionInterface)

It prints the learned α and the SparsityMonitor's table per layer and head, and saves the monitor's heat map
(with matplotlib installed) to --plot.
"""

from __future__ import annotations

import argparse
import sys

import torch

import entflash.integrations.transformers as eft  # registers attn_implementation="entmax"


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="entmax")


def text_batches(vocab: int, batch: int, length: int, seed: int = 0):
    """Byte-level batches of this file's own text, an endless stream: real text with repeats to attend to."""
    data = torch.tensor(list(open(__file__, "rb").read()), dtype=torch.long) % vocab
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(data) - length - 1, (batch,), generator=g)
        yield torch.stack([data[s:s + length] for s in starts.tolist()])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a local Hugging Face causal LM (default: a tiny random Llama)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--alpha-lr", type=float, default=3e-2, help="learning rate of the α parameters")
    ap.add_argument("--plot", default="hf_entmax_sparsity.png", help="where to save the sparsity heat map")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="entmax")
    else:
        model = tiny_model()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(dev).train()
    print("entflash: model = ...from_pretrained(path, attn_implementation='entmax'); "
          "alphas = eft.make_alpha_learnable(model)")
    alphas = eft.make_alpha_learnable(model, init=1.5, per_head=True)
    others = [p for n, p in model.named_parameters() if not n.endswith("entmax_alpha_logit")]
    opt = torch.optim.AdamW([{"params": others, "lr": args.lr}, {"params": alphas, "lr": args.alpha_lr}])
    batches = text_batches(model.config.vocab_size, args.batch, args.length)
    with eft.SparsityMonitor(model) as mon:
        for step in range(1, args.steps + 1):
            ids = next(batches).to(dev)
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 1 or step % 10 == 0 or step == args.steps:
                rows = mon.summary(reset=True)  # the only host synchronisation of the monitor
                zeros = sum(sum(r["zero_fraction"]) / len(r["zero_fraction"]) for r in rows) / len(rows)
                print(f"step {step:4d}  loss {loss.item():.3f}  exactly-zero weights {zeros:.1%}", flush=True)
        model.eval()
        with torch.no_grad():
            ids = next(batches).to(dev)
            mon.reset()
            model(input_ids=ids)
        rows = mon.summary()
    print("\nlearned α per layer and head:")
    for i, a in enumerate(eft.learned_alpha(model)):
        print(f"  layer {i}: " + " ".join(f"{x:.3f}" for x in a))
    print("\nper layer and head: mean keys with nonzero weight / exactly-zero weights / empty 64x64 blocks")
    for r in rows:
        cells = [f"{s:5.1f} {z:4.0%} {b:4.0%}" for s, z, b in zip(r["support"], r["zero_fraction"],
                                                                  r["block_sparsity"])]
        print(f"  layer {r['layer']}: " + " | ".join(cells))
    try:
        print(f"\nsparsity heat map: {mon.plot(args.plot)}")
    except ImportError as e:
        print(f"\n(no plot: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
