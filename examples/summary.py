"""The examples' results as Markdown tables.

    python examples/summary.py [examples/results]

Reads <dir>/train_lm/results.json, <dir>/needle/results.json and <dir>/encoder/results.json (whichever exist) and
prints, per variant: the steps trained, the quality measure of the example and the mean training loss over the last
five logged steps every variant reached, headed by the latest of them ("train loss @ step S"; they train on the same
batches, so this compares them at equal steps when --max-minutes stopped them at different ones), the mean sparsity
of the entmax models (keys kept per query row, fraction of exactly-zero weights, fraction of empty 64×64 tiles) and,
for the language model, the training step time against softmax.
"""

from __future__ import annotations

import json
import os
import sys

from entflash.integrations.sparsity import SparsityMonitor


def _sparsity_cells(summary):
    """Keys per row, zero weights and empty tiles of a SparsityMonitor.summary() list, averaged over layers and
    heads (SparsityMonitor.means); dashes for a variant without one."""
    m = SparsityMonitor.means(summary) if summary else None
    if m is None:
        return ["–"] * 3
    return [f"{m['support']:.1f}", f"{100 * m['zero_fraction']:.1f}%", f"{100 * m['block_sparsity']:.0f}%"]


def _alpha_cell(alpha):
    if not alpha:
        return "1 (softmax)"
    flat = [a for layer in alpha for a in (layer if isinstance(layer, list) else [layer])]
    lo, hi = min(flat), max(flat)
    return f"{lo:.2f}" if hi - lo < 5e-3 else f"{lo:.2f}–{hi:.2f}"


def common_train_loss(curves, last=5):
    """(S, {variant: mean training loss over the last `last` logged steps that every variant reached, the latest
    being S}) from {variant: [[step, loss], ...]}; None when the variants share no logged step. The variants train
    on the same batches, so this compares them at equal steps when they stopped at different ones."""
    if not curves or not all(curves.values()):
        return None
    common = sorted(set.intersection(*({s for s, _ in c} for c in curves.values())))[-last:]
    if not common:
        return None
    at = {v: dict(map(tuple, c)) for v, c in curves.items()}
    return common[-1], {v: sum(a[s] for s in common) / len(common) for v, a in at.items()}


def lm_table(res):
    lengths = sorted(next(iter(res["val_loss"].values())), key=int)
    same_head, same = _same_steps(res)
    head = (["variant", "steps", "α"] + [f"val loss @{n}" for n in lengths] + same_head
            + ["keys/row", "zero weights", "empty tiles"])
    rows = []
    for v in res["variants"]:
        rows.append([v, str(res["steps_done"][v]), _alpha_cell(res.get("alpha", {}).get(v))]
                    + [f"{res['val_loss'][v][n]:.3f}" for n in lengths] + same[v]
                    + _sparsity_cells(res.get("sparsity", {}).get(v)))
    out = [_md(head, rows)]
    st = res.get("step_time")
    if st:
        out.append(_md(["tokens", "softmax ms", "entmax 1.5 ms", "ratio"],
                       [[n, f"{t['softmax_ms']:.1f}", f"{t['entmax15_ms']:.1f}", f"{t['ratio']:.2f}×"]
                        for n, t in st.items() if n != "device"]) + f"\n\n(training step, batch 1, {st['device']})")
    return "\n\n".join(out)


def _same_steps(res):
    """The training-loss column at equal steps (common_train_loss): (header, {variant: cells}); no column (an empty
    header and empty cells) when the variants share no logged step."""
    same = common_train_loss({v: res.get("train_loss", {}).get(v) for v in res["variants"]})
    if same is None:
        return [], {v: [] for v in res["variants"]}
    return [f"train loss @ step {same[0]}"], {v: [f"{x:.3f}"] for v, x in same[1].items()}


def needle_table(res):
    lengths = sorted(next(iter(res["accuracy"].values())), key=int)
    same_head, same = _same_steps(res)
    head = ["variant", "steps", "α"] + [f"accuracy @{n}" for n in lengths] + same_head
    rows = [[v, str(res["steps_done"][v]), _alpha_cell(res.get("alpha", {}).get(v))]
            + [f"{100 * res['accuracy'][v][n]:.1f}%" for n in lengths] + same[v] for v in res["variants"]]
    return _md(head, rows)


def encoder_table(res):
    same_head, same = _same_steps(res)
    head = ["variant", "steps", "masked identifier bytes", "whole identifiers"] + same_head + [
        "keys/row", "zero weights", "empty tiles"]
    rows = [[v, str(res["steps_done"][v]), f"{100 * res['eval'][v]['byte_accuracy']:.1f}%",
             f"{100 * res['eval'][v]['identifier_accuracy']:.1f}%"] + same[v]
            + _sparsity_cells(res.get("sparsity", {}).get(v)) for v in res["variants"]]
    return _md(head, rows)


def _md(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


TABLES = {"train_lm": lm_table, "needle": needle_table, "encoder": encoder_table}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    root = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    found = False
    for name, table in TABLES.items():
        path = os.path.join(root, name, "results.json")
        if not os.path.exists(path):
            continue
        found = True
        with open(path) as fh:
            res = json.load(fh)
        env = res.get("environment", {})
        print(f"### {name}\n\n{table(res)}\n\n({env.get('gpu', res['config'].get('device'))}, "
              f"commit {env.get('commit', '?')})\n")
    if not found:
        print(f"summary: no results.json under {root}/{{{','.join(TABLES)}}}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
