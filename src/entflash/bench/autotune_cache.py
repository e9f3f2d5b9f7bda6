"""Cached autotuning choices of the compared Triton libraries (AdaSplash), so that a sweep does not re-tune.

AdaSplash-2 autotunes six kernels per (N, head dim), 60 configurations in all
(compiled and timed one by one), which is minutes of a full sweep on a fresh
machine. The harness records the configuration each autotuner chose, per
autotuning key, in a small JSON file (benchmarks/autotune/<gpu>.json) and, on a
later run, puts those choices back into the autotuners' in-memory caches
before any call: the same configuration the library's own autotuning picked
on that GPU, without timing the others again. A key that is not in the file
(another shape, another Triton version's key layout) is simply tuned as
usual and then recorded. entflash has no autotuning (fixed launch configs:
kernels/config.py).

Bounded autotuning (borrow): AdaSplash-2 tuning one new head dim at
N = 65536 took more than six minutes on the H200 (2026-11-29), so a
sweep cannot tune there within its ten minutes. For a sequence length with no
recorded choice, borrow() copies the choice recorded at the nearest sequence
length with the same other key parts (head dim, dtypes): AdaSplash's
configurations set per-tile launch parameters (warps, stages), whose best
value depends on the tile's work, not on how many tiles there are. Borrowed
choices are never written back to the file (it holds tuned choices only) and
the bench marks the rows that used them; `--tune-missing` tunes instead.
"""

from __future__ import annotations

import json
import os
import sys

# modules whose autotuners are cached: the compared libraries only
PREFIXES = ("adasplash",)
# autotuning key arguments that are a sequence length (the only key part borrow() may change)
SEQ_KEYS = ("N_CTX",)
# (autotuner name, key) -> (position of the sequence length in the key, the length whose choice was copied)
_borrowed: dict = {}


def _import_all():
    """Import every module of the packages in PREFIXES that is installed (AdaSplash imports its kernel modules
    only on a call, and a choice can be restored only into an autotuner that exists)."""
    import importlib
    import pkgutil

    for pkg_name in PREFIXES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", []), pkg_name + "."):
            try:
                importlib.import_module(info.name)
            except Exception:  # a module that cannot load here has no autotuner to restore
                pass


def autotuners() -> dict:
    """name -> triton Autotuner, for every autotuned kernel of the imported modules under PREFIXES."""
    from triton.runtime.autotuner import Autotuner

    found = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not mod_name.startswith(PREFIXES):
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, Autotuner):
                found[f"{mod_name}.{attr}"] = obj
    return found


def _config_to_json(c) -> dict:
    return {"kwargs": dict(c.kwargs), "num_warps": c.num_warps, "num_stages": c.num_stages,
            "num_ctas": getattr(c, "num_ctas", 1), "maxnreg": getattr(c, "maxnreg", None)}


def _config_from_json(d):
    import triton

    extra = {"maxnreg": d["maxnreg"]} if d.get("maxnreg") is not None else {}
    return triton.Config(dict(d["kwargs"]), num_warps=d["num_warps"], num_stages=d["num_stages"],
                         num_ctas=d.get("num_ctas", 1), **extra)


def _key(k) -> tuple:
    return tuple(tuple(x) if isinstance(x, list) else x for x in k)


def load(path: str) -> int:
    """Put the recorded choices into the autotuners' caches; returns how many were restored."""
    if not path or not os.path.exists(path):
        return 0
    with open(path) as fh:
        saved = json.load(fh)
    _import_all()
    n = 0
    for name, at in autotuners().items():
        for entry in saved.get(name, []):
            key = _key(entry["key"])
            if key not in at.cache:
                at.cache[key] = _config_from_json(entry["config"])
                n += 1
    return n


def borrow(seq_lens) -> dict:
    """For each sequence length in seq_lens without a choice in an autotuner's cache, copy the choice of the
    nearest recorded length (log distance; a tie goes to the longer) whose other key parts are equal. Returns
    {seq_len: sorted source lengths} of what was borrowed (another head dim may borrow from another length);
    borrowed_from(n) answers the same later."""
    import math

    done = {}
    for name, at in autotuners().items():
        pos = [i for i, k in enumerate(at.keys) if k in SEQ_KEYS]
        if len(pos) != 1:
            continue
        i = pos[0]
        groups = {}  # the recorded (tuned) keys by their other parts
        for key in at.cache:
            if (name, key) not in _borrowed:
                groups.setdefault(key[:i] + key[i + 1:], []).append(key)
        for n in seq_lens:
            for rest, keys in groups.items():
                target = rest[:i] + (n,) + rest[i:]
                if target in at.cache:
                    continue
                src = min(keys, key=lambda k: (abs(math.log(k[i] / n)), -k[i]))
                at.cache[target] = at.cache[src]
                _borrowed[(name, target)] = (i, src[i])
                done.setdefault(n, set()).add(src[i])
    return {n: sorted(s) for n, s in done.items()}


def borrowed_from(seq_len: int) -> list:
    """The recorded sequence lengths whose choices were borrowed for seq_len (empty if none were)."""
    return sorted({s for (_, key), (i, s) in _borrowed.items() if key[i] == seq_len})


def save(path: str) -> int:
    """Record every autotuner's current choices (merged with what the file holds); returns the entry count."""
    if not path:
        return 0
    saved = {}
    if os.path.exists(path):
        with open(path) as fh:
            saved = json.load(fh)
    for name, at in autotuners().items():
        entries = {json.dumps(e["key"]): e for e in saved.get(name, [])}
        for key, cfg in at.cache.items():
            if (name, key) in _borrowed:  # copied, not tuned: the file holds tuned choices only
                continue
            k = [list(x) if isinstance(x, tuple) else x for x in key]
            entries[json.dumps(k)] = {"key": k, "config": _config_to_json(cfg)}
        if entries:
            saved[name] = sorted(entries.values(), key=lambda e: json.dumps(e["key"]))
    if not saved:  # nothing autotuned (AdaSplash not installed, or not run yet): no file
        return 0
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(saved, fh, indent=1, sort_keys=True)
    return sum(len(v) for v in saved.values())
