"""The "trained" benchmark inputs: a (tiny, briefly trained) model's own q, k, v per layer."""

import os

import pytest
import torch

pytest.importorskip("transformers")

from entflash import entmax15  # noqa: E402
from entflash.bench import trained  # noqa: E402


def test_train_save_load_and_capture(tmp_path):
    tiny = dict(trained.CONFIG, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=1024)
    logs = []
    trained.train("cpu", steps=2, context=64, config=tiny, out=str(tmp_path), log=logs.append)
    assert logs and "step 2/2" in logs[-1]
    model = trained.load("cpu", str(tmp_path), train_if_missing=False)
    qkv = trained.capture_qkv(model, 100)
    assert sorted(qkv) == [0, 1]
    q, k, v = qkv[1]
    assert q.shape == k.shape == v.shape == (1, 2, 100, 64)
    assert model.config._attn_implementation == "entmax"  # restored after the capture
    tq, tk, tv = trained.make_trained(0, 3, 5, 100, 64, model=model, dtype=torch.float32)
    assert tq.shape == (3, 5, 100, 64)
    assert torch.equal(tq[2, 2], qkv[0][0][0, 0].float())  # heads tiled, passage repeated over the batch
    with pytest.raises(ValueError, match="head dim"):
        trained.make_trained(0, 1, 4, 100, 128, model=model)
    with pytest.raises(FileNotFoundError, match="python -m entflash.bench.trained"):
        trained.load("cpu", str(tmp_path / "none"), train_if_missing=False)


def test_committed_model_is_read_in_a_checkout(tmp_path, monkeypatch):
    """With no cached model and $ENTFLASH_CACHE unset, a checkout reads benchmarks/trained_lm (the weights the
    baseline's trained rows were measured on); its attention is the one docs/performance.md describes: past
    layer 0, rows keep a few dozen keys."""
    if not os.path.exists(os.path.join(trained.COMMITTED, "config.json")):
        pytest.skip("not a checkout (no benchmarks/trained_lm)")
    monkeypatch.delenv("ENTFLASH_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert os.path.samefile(trained.cache_dir(), trained.COMMITTED)
    monkeypatch.setenv("ENTFLASH_CACHE", str(tmp_path / "elsewhere"))
    assert trained.cache_dir() == str(tmp_path / "elsewhere")  # the variable wins, even where no model is yet

    model = trained.load("cpu", trained.COMMITTED, train_if_missing=False)
    assert model.config.entmax_alpha == 1.5 and model.config.num_hidden_layers == 4
    q, k, _ = trained.capture_qkv(model, 512, start=4096)[2]
    s = (q.double() @ k.double().transpose(-1, -2)) / 8.0
    s = s.masked_fill(torch.ones(512, 512, dtype=torch.bool).triu(1), float("-inf"))
    keys = (entmax15(s, dim=-1) > 0).sum(-1)[..., 256:].double().mean().item()  # rows with 256+ keys to choose from
    assert 1.0 < keys < 32.0, keys  # 12.7 on these weights


def test_stage_times_takes_trained_inputs():
    """benchmarks/stage_times.py profiles a trained model's layer (trained:<layer>) beside the synthetic inputs."""
    import argparse
    import importlib.util

    path = os.path.join(os.path.dirname(trained.COMMITTED), "stage_times.py")
    if not os.path.exists(path):
        pytest.skip("not a checkout (no benchmarks/)")
    spec = importlib.util.spec_from_file_location("stage_times", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert [mod.parse_inputs(t) for t in ("clustered", "random", "trained:3")] == ["clustered", "random", "trained:3"]
    for bad in ("trained", "trained:x", "uniform"):
        with pytest.raises(argparse.ArgumentTypeError, match="trained:<layer>"):
            mod.parse_inputs(bad)
