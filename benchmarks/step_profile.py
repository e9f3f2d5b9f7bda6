"""Where one training step of a small decoder spends its GPU time: the kernels of one bf16 step (batch 1) of the
train_lm example's model at N tokens, entmax α = 1.5 against sdpa, and entflash's own fwd+bwd on inputs whose
scores are nearly uniform (a freshly initialised model) against unit-variance random ones.

    PYTHONPATH=src python benchmarks/step_profile.py [--n N]
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

import entflash
import entflash.integrations.transformers  # noqa: F401


def step(model, x):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=x, labels=x).loss
    loss.backward()


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8192, help="tokens of the step")
    N = ap.parse_args().n
    cfg = LlamaConfig(vocab_size=256, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=N)
    x = torch.randint(0, 256, (1, N), device="cuda")
    for impl in ("sdpa", "entmax"):
        torch.manual_seed(0)
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=impl).cuda()
        print(f"{impl}: step {timed(lambda: step(model, x)):.1f} ms", flush=True)
        if impl == "entmax":
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step(model, x)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
    for std in (1.0, 0.05):
        q, k, v = (torch.randn(1, 6, N, 64, device="cuda", dtype=torch.bfloat16) * s for s in (std, std, 1.0))
        q.requires_grad_(True)
        k.requires_grad_(True)
        v.requires_grad_(True)

        def fb():
            o = entflash.entmax_attention(q, k, v, alpha=1.5, causal=True)
            o.sum().backward()
        fwd = timed(lambda: entflash.entmax_attention(q, k, v, alpha=1.5, causal=True))
        print(f"q, k std {std}: forward {fwd:.2f} ms, fwd+bwd {timed(fb):.2f} ms", flush=True)


if __name__ == "__main__":
    main()
