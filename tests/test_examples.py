"""The examples run as a user runs them (quick settings), and produce what they promise."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_hf_entmax_example(tmp_path):
    pytest.importorskip("transformers")
    plot = tmp_path / "sparsity.png"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "hf_entmax.py"), "--steps", "3", "--length",
                          "64", "--plot", str(plot)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "learned α per layer and head" in res.stdout
    assert "layer 1:" in res.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert plot.stat().st_size > 0
