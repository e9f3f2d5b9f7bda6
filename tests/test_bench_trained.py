"""The "trained" benchmark inputs: a (tiny, briefly trained) model's own q, k, v per layer."""

import pytest
import torch

pytest.importorskip("transformers")

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
