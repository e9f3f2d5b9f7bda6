"""entflash probe MODEL TEXT [--alpha A] [--lengths N ...] [--measure]: the sparsity of a model's entmax attention
on your own text, per layer and head, and the speed to expect (entflash.probe)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from . import default_baseline, estimate_speed, load_model, read_text, tokenize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _progress(items, desc):
    try:
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, leave=False)
    except ImportError:
        return items


def _time_forward(model, ids, reps=10):
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=ids)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _attention_map(model, ids, layer, head, path):
    """PNG of one head's weights on one passage (white: exactly zero)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with torch.no_grad():
        res = model(input_ids=ids, output_attentions=True)
    att = res.attentions[layer][0, head].float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_where(att == 0, att), cmap=cmap, interpolation="nearest")
    ax.set(title=f"layer {layer}, head {head}: weights (white = exactly 0)", xlabel="key", ylabel="query")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="entflash probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a local Hugging Face checkpoint folder (config.json and weights)")
    ap.add_argument("text", help="a text file, or a folder of text files")
    ap.add_argument("--alpha", type=float, default=None, help="α for every head (default: the model's own: "
                    "config.entmax_alpha, learned values included, else 1.5)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048], help="passage lengths in tokens")
    ap.add_argument("--samples", type=int, default=2, help="passages per length")
    ap.add_argument("--out", default="probe.json", help="the JSON report")
    ap.add_argument("--plots", default="probe", help="prefix of the PNGs (needs matplotlib; 'none' for none)")
    ap.add_argument("--layer", type=int, default=0, help="layer of the attention-map PNG")
    ap.add_argument("--head", type=int, default=0, help="head of the attention-map PNG")
    ap.add_argument("--passage", type=int, default=0, help="first token of the attention-map passage")
    ap.add_argument("--map-length", type=int, default=128, help="tokens in the attention-map passage")
    ap.add_argument("--baseline", default=None, help="benchmark JSONL for the speed estimate (default: the "
                    "repository's H200 baseline)")
    ap.add_argument("--measure", action="store_true", help="measure the model's forward with entmax and with sdpa "
                    "on the GPU instead of estimating")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                    help="the dtype the model runs in (default: bfloat16 on a GPU, as models are served and as the "
                         "benchmark baseline was measured; float32 on the CPU)")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")]
    if args.measure and device != "cuda":
        ap.error("--measure needs a CUDA GPU")
    try:
        model = load_model(args.model, args.alpha, device).to(dtype)
        text = read_text(args.text)
        passages = tokenize(args.model, text, model.config.vocab_size)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"entflash probe: {e}", file=sys.stderr)
        return 2
    ids = passages.ids
    for n in args.lengths:
        if n < 1 or len(ids) < n:
            print(f"entflash probe: the text has {len(ids)} tokens ({passages.source}), shorter than the requested "
                  f"length {n}", file=sys.stderr)
            return 2
    import entflash.integrations.transformers as eft

    mods = eft.attention_modules(model)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    baseline_rows = []
    baseline = args.baseline or default_baseline()
    if baseline and not args.measure:
        baseline_rows = [json.loads(line) for line in open(baseline) if line.strip()]
    report = {"model": args.model, "text": args.text, "tokens": len(ids), "tokenization": passages.source,
              "dtype": str(dtype).replace("torch.", ""),
              "alpha": eft.learned_alpha(model), "lengths": []}
    print(f"entflash probe: {type(model).__name__}, {len(mods)} attention layers, {len(ids)} tokens of text "
          f"({passages.source})")
    for n in args.lengths:
        starts = torch.linspace(0, len(ids) - n, args.samples).long().tolist() if args.samples > 1 else [0]
        with eft.SparsityMonitor(model) as mon, torch.no_grad():
            for s in _progress(starts, f"length {n}"):
                model(input_ids=torch.tensor([ids[s:s + n]], device=device))
            rows = mon.summary()
        entry = {"length": n, "layers": rows}
        entry["mean"] = eft.SparsityMonitor.means(rows)
        if args.measure:
            x = torch.tensor([ids[:n]], device=device)
            sdpa = type(model).from_pretrained(args.model, attn_implementation="sdpa").to(device, dtype).eval()
            t_e, t_s = _time_forward(model, x), _time_forward(sdpa, x)
            entry["speed"] = {"entmax_ms": t_e, "sdpa_ms": t_s, "ratio": t_e / t_s,
                              "gpu": torch.cuda.get_device_name(), "measured": True}
            del sdpa
        elif baseline_rows:
            est = estimate_speed(baseline_rows, head_dim, n, entry["mean"]["block_sparsity"])
            if est:
                entry["speed"] = {"ratio": est[0], "measured": False, "note": est[1]}
        report["lengths"].append(entry)
    print(f"\n{'length':>7} {'layer':>5}  mean keys with weight / exactly-zero weights / empty 64x64 blocks, per head")
    for e in report["lengths"]:
        for r in e["layers"]:
            cells = " | ".join(f"{s:6.1f} {z:4.0%} {b:4.0%}" for s, z, b in zip(r["support"], r["zero_fraction"],
                                                                             r["block_sparsity"]))
            print(f"{e['length']:>7} {r['layer']:>5}  {cells}")
        sp = e.get("speed")
        if sp and sp["measured"]:
            print(f"{'':>7} speed: entmax {sp['entmax_ms']:.2f} ms vs sdpa {sp['sdpa_ms']:.2f} ms per forward "
                  f"({sp['ratio']:.2f}x, {sp['gpu']})")
        elif sp:
            print(f"{'':>7} speed: {sp['note']}")
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"\nreport: {args.out}")
    if args.plots != "none":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("(no PNGs: plotting needs matplotlib: pip install 'entflash[plot]')")
            return 0
        with eft.SparsityMonitor(model) as mon, torch.no_grad():
            model(input_ids=torch.tensor([ids[:args.lengths[-1]]], device=device))
            heat = mon.plot(f"{args.plots}-sparsity.png")
        p0 = min(max(args.passage, 0), max(0, len(ids) - args.map_length))
        if not 0 <= args.layer < len(mods):
            print(f"entflash probe: --layer {args.layer} is not in 0..{len(mods) - 1}", file=sys.stderr)
            return 2
        amap = f"{args.plots}-attention.png"
        _attention_map(model, torch.tensor([ids[p0:p0 + args.map_length]], device=device), args.layer, args.head, amap)
        print(f"plots: {heat} (block sparsity per layer and head), {amap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
