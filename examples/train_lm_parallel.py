"""The evidence LM (examples/train_lm.py: a byte-level Llama, entmax α = 1.5, the standard library's source)
trained with its sequence split across processes: each rank holds 1 / world of every training sequence, and
attention exchanges heads (sequence parallelism) or solves τ across ranks (context parallelism) so that every
token still sees its whole prefix. Then the same steps in one process, and the losses side by side: they agree
to float32 rounding, because both methods are exact.

    python examples/train_lm_parallel.py --quick                    # CPU, 2 processes (gloo), about a minute
    torchrun --nproc-per-node 4 examples/train_lm_parallel.py --method context --layout zigzag   # GPUs (NCCL)

Without torchrun the script starts --world processes itself (gloo on CPU). Each rank embeds its shard with the
shard's global positions (position_ids), the model's attention is entflash.distributed's function (registered
below as the attention implementation "entmax_sp" / "entmax_cp"), the next-byte loss is taken on the rank's own
tokens, and DistributedDataParallel averages the gradients over the ranks, so that every rank takes the step
of the whole sequence's mean loss.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_lm import stdlib_bytes  # noqa: E402

import entflash.distributed as ed  # noqa: E402
import entflash.integrations.transformers  # noqa: E402,F401  (registers "entmax" for the single-process run)

LAYOUT = {"layout": "contiguous"}


def _parallel_attention(method):
    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        if attention_mask is not None:
            raise NotImplementedError("this example trains on unpadded sequences (no attention mask)")
        kw = dict(alpha=module.config.entmax_alpha, causal=True, scale=scaling)
        key, value = key.to(query.dtype), value.to(query.dtype)
        if method == "sequence":
            out = ed.sequence_parallel_attention(query, key, value, **kw)
        else:
            out = ed.context_parallel_attention(query, key, value, layout=LAYOUT["layout"], **kw)
        return out.transpose(1, 2), None
    return attention


def register():
    from transformers import AttentionInterface, AttentionMaskInterface

    for method in ("sequence", "context"):
        name = f"entmax_{method[0]}p"
        AttentionInterface.register(name, _parallel_attention(method))
        AttentionMaskInterface.register(name, lambda *a, **k: None)  # causality is the attention's


def build(args, impl, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, max_position_embeddings=args.length, entmax_alpha=1.5)
    return LlamaForCausalLM._from_config(cfg, attn_implementation=impl).to(device)


def batches(data, args):
    g = torch.Generator().manual_seed(1)
    for _ in range(args.steps):
        s = torch.randint(0, len(data) - args.length - 2, (args.batch,), generator=g)
        yield torch.stack([data[i:i + args.length + 1] for i in s.tolist()]).long()


def train_single(args, data, device):
    model = build(args, "entmax", device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    losses = []
    for x in batches(data, args):
        x = x.to(device)
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_parallel(rank, world, args, data, device):
    from torch.nn.parallel import DistributedDataParallel

    register()
    model = build(args, f"entmax_{args.method[0]}p", device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    pos = ed.positions(args.length, world, rank, LAYOUT["layout"], device)
    losses = []
    for step, x in enumerate(batches(data, args)):
        x = x.to(device)
        inp, labels = x[:, :-1].index_select(1, pos), x[:, 1:].index_select(1, pos)
        logits = ddp(input_ids=inp, position_ids=pos[None].expand(x.shape[0], -1)).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        if rank == 0 and (step + 1) % args.log_every == 0:
            print(f"step {step + 1}/{args.steps}: loss {losses[-1]:.4f} ({args.method} parallel, {world} ranks)",
                  flush=True)
    return losses


def run(rank, world, args, port=None):
    if port is not None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    if use_cuda:
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    try:
        data, _ = stdlib_bytes(max_bytes=2_000_000 if args.quick else None)
        losses = train_parallel(rank, world, args, data, device)
        if rank == 0:
            single = train_single(args, data, device)
            diff = max(abs(a - b) for a, b in zip(losses, single))
            print(f"final loss: {losses[-1]:.4f} with the sequence over {world} ranks ({args.method} parallel, "
                  f"{LAYOUT['layout']} layout), {single[-1]:.4f} in one process; largest difference over "
                  f"{len(losses)} steps: {diff:.2e}", flush=True)
            if diff > args.tolerance:
                raise SystemExit(f"the parallel run differs from the single-process run by {diff:.2e} "
                                 f"(> {args.tolerance})")
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny model on the CPU")
    ap.add_argument("--method", choices=("sequence", "context"), default="sequence")
    ap.add_argument("--layout", choices=ed.LAYOUTS, default="contiguous", help="context parallelism's layout")
    ap.add_argument("--world", type=int, default=2, help="processes to start without torchrun")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--length", type=int, default=None, help="training context (bytes)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="largest accepted loss difference to the single-process run (float32 rounding grows "
                         "with the steps)")
    args = ap.parse_args(argv)
    quick = dict(steps=10, length=128, batch=2, hidden=64, layers=2, heads=4, kv_heads=2)
    full = dict(steps=500, length=4096, batch=8, hidden=256, layers=4, heads=4, kv_heads=4)
    for key, val in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, val)
    if args.method == "sequence" and args.layout != "contiguous":
        ap.error("--layout: sequence parallelism takes the contiguous layout")
    LAYOUT["layout"] = args.layout
    if "RANK" in os.environ:  # under torchrun
        run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_spawned, args=(args.world, args, port), nprocs=args.world, join=True)
    return 0


def _spawned(rank, world, args, port):
    LAYOUT["layout"] = args.layout
    run(rank, world, args, port)


if __name__ == "__main__":
    sys.exit(main())
