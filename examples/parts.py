"""Per-variant result files and checkpoints for the examples that train several variants.

Each variant writes `<out>/<variant>.json` when it has trained and been evaluated, so the variants can train in
separate processes (`--variants softmax`, `--variants entmax15`, ... on one GPU side by side or on several GPUs)
with the same seeds and tokens as one sequential run; any later call gathers the files present into
results.json. `--variants` with no names trains nothing and only gathers. The parts and checkpoints in one
--out belong to one configuration (model, length, batch): run other settings with another --out.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch


def optimizer(model, lr: float, alpha_lr: float, **kw):
    """AdamW over the model's weights at `lr` and its learned α logits (make_alpha_learnable) at `alpha_lr`. Each
    group keeps its base rate as "base_lr" for set_lr: the optimizer copies the parameter lists it is given, so a
    group cannot be recognised by the list it was built from."""
    alphas, others = [], []
    for n, p in model.named_parameters():
        (alphas if n.endswith("entmax_alpha_logit") else others).append(p)
    groups = [{"params": others, "lr": lr, "base_lr": lr}]
    if alphas:
        groups.append({"params": alphas, "lr": alpha_lr, "base_lr": alpha_lr})
    return torch.optim.AdamW(groups, **kw)


def set_lr(opt, factor: float) -> None:
    """Every group's learning rate to its base rate times `factor` (a warm-up or decay schedule's value)."""
    for grp in opt.param_groups:
        grp["lr"] = grp["base_lr"] * factor


def resume(out: str, name: str, model, opt, device) -> int:
    """Load `<out>/<name>.pt` into the model and optimizer when it exists; the step to continue from (0 if not)."""
    path = os.path.join(out, f"{name}.pt")
    if not os.path.exists(path):
        return 0
    state = torch.load(path, map_location=device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    print(f"{name}: resumed at step {state['step']}", flush=True)
    return state["step"]


def checkpoint(out: str, name: str, model, opt, step: int) -> None:
    """Save what resume() loads: model, optimizer and the number of steps done."""
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, os.path.join(out, f"{name}.pt"))


def add_time_limit(ap) -> None:
    """--max-minutes: a variant that has trained that long stops, checkpoints and is evaluated as it is; its part
    records the steps it reached, so that a full run fits a time-limited machine and says what it did."""
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop a variant's training after this many minutes (evaluated at the step reached; "
                         "results.json records it as steps_done); a later call with the same --out resumes")


def end_step(args, out: str, name: str, model, opt, done: int, t0: float) -> bool:
    """After `done` steps of training that began at time t0: checkpoint every args.ckpt_every steps, at the last
    step and when args.max_minutes has run out; True when training must stop early."""
    stop = done < args.steps and args.max_minutes is not None and time.time() - t0 > 60 * args.max_minutes
    if done % args.ckpt_every == 0 or done == args.steps or stop:
        checkpoint(out, name, model, opt, done)
    if stop:
        print(f"{name}: stopped at step {done} of {args.steps} (--max-minutes)", flush=True)
    return stop


def log_curve(out: str, name: str, step: int, loss: float) -> None:
    """Append (step, training loss) to `<out>/<name>.curve.jsonl`. The variants train on the same batches, so their
    curves compare at equal steps also when --max-minutes stopped them at different ones."""
    with open(os.path.join(out, f"{name}.curve.jsonl"), "a") as fh:
        fh.write(json.dumps([step, round(float(loss), 5)]) + "\n")


def load_curve(out: str, name: str) -> list:
    """[[step, loss], ...] in step order from log_curve's file (a step logged again after a resume keeps its last
    value); [] when there is none."""
    path = os.path.join(out, f"{name}.curve.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        points = dict(json.loads(line) for line in fh if line.strip())
    return [[s, points[s]] for s in sorted(points)]


def save_part(out: str, name: str, obj) -> None:
    tmp = os.path.join(out, f".{name}.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, os.path.join(out, f"{name}.json"))  # whole or absent, also when a run stops mid-write


def load_parts(out: str, names) -> dict:
    """{name: obj} of the parts present in `out`."""
    parts = {}
    for n in names:
        path = os.path.join(out, f"{n}.json")
        if os.path.exists(path):
            with open(path) as fh:
                parts[n] = json.load(fh)
    return parts


def environment() -> dict:
    """Where results came from: the command, then entflash.bench.env.environment() (GPU, versions, commit, date)
    and the transformers version."""
    import transformers

    from entflash.bench.env import environment as versions

    return {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), **versions(),
            "transformers": transformers.__version__}


def write_results(out: str, results: dict, variants, plot) -> bool:
    """Write results.json (with environment()); draw the plot when every variant is present. True when complete."""
    results["environment"] = environment()
    path = os.path.join(out, "results.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"results: {path}")
    missing = [v for v in variants if v not in results["variants"]]
    if missing:
        print(f"(no plot yet: the variants {missing} have not finished; run them with --variants, then gather with "
              f"--variants and no names)")
        return False
    try:
        plot(results, os.path.join(out, "results.png"))
        print(f"plot: {os.path.join(out, 'results.png')}")
    except ImportError:
        print("(no plot: plotting needs matplotlib: pip install 'entflash[plot]')")
    return True
