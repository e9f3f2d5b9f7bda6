"""The examples run as a user runs them (quick settings), and produce what they promise."""

import importlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example(name):
    """A module of examples/, imported as the examples import each other (with examples/ on sys.path)."""
    path = os.path.join(ROOT, "examples")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)


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


def test_train_lm_quick(tmp_path, capsys):
    """--quick trains the three variants on the standard library's source and writes results.json and the plot;
    a variant trained alone (--variants) writes its part, and a later run resumes it from its checkpoint instead
    of training again, trains the others and gathers all three."""
    pytest.importorskip("transformers")
    import json

    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_lm.py"), "--quick", "--steps", "20", "--out",
           str(tmp_path)]
    first = subprocess.run(cmd + ["--variants", "softmax"], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    part = json.loads((tmp_path / "results.json").read_text())
    assert part["variants"] == ["softmax"] and not (tmp_path / "results.png").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "softmax: resumed at step 20" in res.stdout
    out = json.loads((tmp_path / "results.json").read_text())
    assert set(out["val_loss"]) == {"softmax", "entmax15", "learned"}
    assert all(len(v) == 3 for v in out["val_loss"].values())
    assert len(out["alpha"]["learned"]) == 2 and len(out["sparsity"]["entmax15"]) == 2
    # examples/summary.py tabulates it (Markdown, one row per variant)
    summary = example("summary")

    (tmp_path / "all" / "train_lm").mkdir(parents=True)
    (tmp_path / "all" / "train_lm" / "results.json").write_text((tmp_path / "results.json").read_text())
    assert summary.main([str(tmp_path / "all")]) == 0
    table = capsys.readouterr().out
    assert "val loss @256" in table and "| softmax | 20 | 1 (softmax) |" in table
    assert "| entmax15 | 20 | 1.50 |" in table
    assert "train loss @ step 20" in table and len(out["train_loss"]["learned"]) == 1
    assert summary.main([str(tmp_path / "none")]) == 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "results.png").stat().st_size > 0


def test_summary_compares_training_loss_at_equal_steps():
    """Variants stopped at different steps compare on the last logged steps they all reached (their batches are
    the same): the mean over those steps, and None when they share none."""
    summary = example("summary")

    curves = {"softmax": [[s, 10.0 / s] for s in range(50, 1001, 50)],
              "entmax15": [[s, 9.0 / s] for s in range(50, 401, 50)]}
    step, loss = summary.common_train_loss(curves, last=2)
    assert step == 400 and loss["softmax"] == pytest.approx((10 / 350 + 10 / 400) / 2)
    assert loss["entmax15"] == pytest.approx((9 / 350 + 9 / 400) / 2)
    assert summary.common_train_loss({"a": [[1, 1.0]], "b": [[2, 1.0]]}) is None
    assert summary.common_train_loss({"a": [[1, 1.0]], "b": []}) is None


def test_needle_quick(tmp_path):
    pytest.importorskip("transformers")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "needle.py"), "--quick", "--steps", "10", "--eval-n", "4",
           "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    out = json.loads((tmp_path / "results.json").read_text())
    assert set(out["accuracy"]) == {"softmax", "entmax15", "learned"}
    assert all(set(a) == {"128", "512", "2048"} for a in out["accuracy"].values())
    assert all(0 <= x <= 1 for a in out["accuracy"].values() for x in a.values())
    summary = example("summary")

    assert all(len(c) == 1 and c[0][0] == 10 for c in out["train_loss"].values())
    assert "accuracy @2048 | train loss @ step 10 |" in summary.needle_table(out)


def test_train_encoder_quick(tmp_path):
    pytest.importorskip("transformers")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_encoder.py"), "--quick", "--steps", "10", "--out",
           str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    out = json.loads((tmp_path / "results.json").read_text())
    assert set(out["eval"]) == {"softmax", "entmax15"}
    assert out["eval"]["entmax15"]["identifiers"] > 0 and len(out["sparsity"]["entmax15"]) == 2
    summary = example("summary")

    assert "| whole identifiers | train loss @ step 10 |" in summary.encoder_table(out)


@pytest.mark.parametrize("method,layout", [("sequence", "contiguous"), ("context", "zigzag")])
def test_train_lm_parallel_quick(method, layout):
    """Two processes (gloo) train the LM with the sequence split, and match the single-process losses."""
    pytest.importorskip("transformers")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_lm_parallel.py"), "--quick", "--steps", "4",
           "--method", method, "--layout", layout]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "largest difference over 4 steps" in res.stdout


def test_needle_batches_hold_their_answers():
    """Every haystack holds one needle per key, every lookup's answer is the value its key's needle names, and
    `first` marks exactly the lookups whose key was not asked earlier, at every length the curriculum draws."""
    pytest.importorskip("transformers")
    import torch

    needle = example("needle")

    g = torch.Generator().manual_seed(3)
    assert needle.train_lengths(1024) == [128, 256, 512, 1024] and needle.train_lengths(128) == [128]
    repeats = 0
    for length in (128, 1000, 4096):
        ids, pos, ans, first = needle.make_batch(3, length, g)
        assert ids.shape == (3, length) and ans.shape == first.shape == (3, needle.QUERIES)
        assert int(ids.max()) < needle.VOCAB
        for b in range(3):
            hay = ids[b, :length - 3 * needle.QUERIES]
            needles = hay[(hay >= needle.NEEDLE0) & (hay < needle.VAL0)] - needle.NEEDLE0
            assert sorted((needles // needle.VALS).tolist()) == list(range(needle.KEYS))  # one per key
            value = {int(n) // needle.VALS: int(n) % needle.VALS for n in needles}
            assert ((hay >= needle.FILL0) | ((hay >= needle.NEEDLE0) & (hay < needle.VAL0))).all()
            asked = []
            for j, p in enumerate(pos.tolist()):
                key = ids[b, p].item() - needle.KEY0
                assert ids[b, p - 1] == needle.QUERY and ids[b, p + 1] == ans[b, j]
                assert 0 <= key < needle.KEYS and ans[b, j] == needle.VAL0 + value[key]
                assert bool(first[b, j]) == (key not in asked)
                asked.append(key)
            repeats += len(asked) - len(set(asked))
    assert repeats > 0  # keys are drawn with replacement
    with pytest.raises(ValueError, match="too short"):
        needle.make_batch(1, 60, g)


def test_learned_alpha_trains_at_its_own_rate():
    """The weights train at lr and the learned α logits at alpha_lr through every schedule step (a group found by
    the list it was built from would not be found: the optimizer copies the lists)."""
    pytest.importorskip("transformers")
    parts, train_lm = example("parts"), example("train_lm")

    cfg = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=2, max_position_embeddings=64)
    opt = parts.optimizer(train_lm.build("learned", cfg, "cpu"), 1e-3, 1e-2)
    parts.set_lr(opt, 0.5)
    assert [(len(g["params"]), g["lr"]) for g in opt.param_groups][1] == (1, 0.5e-2)
    assert opt.param_groups[0]["lr"] == 0.5e-3 and len(opt.param_groups[0]["params"]) > 1
    assert len(parts.optimizer(train_lm.build("softmax", cfg, "cpu"), 1e-3, 1e-2).param_groups) == 1
