"""Where a measurement came from: GPU, library versions, commit and date, recorded with every result row
(the bench's JSONL rows, the examples' results.json)."""

from __future__ import annotations

import datetime
import os
import subprocess

import torch


def commit() -> str:
    """$ENTFLASH_COMMIT (a copy of the tree without its git metadata is told its commit), else git's short hash of
    the checkout this module is in, else "unknown"."""
    if os.environ.get("ENTFLASH_COMMIT"):
        return os.environ["ENTFLASH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    """{gpu ("cpu" without CUDA), torch, triton (when installed), commit, date}."""
    env = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    env.update(commit=commit(), date=datetime.date.today().isoformat())
    return env
