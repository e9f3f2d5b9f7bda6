"""`entflash probe`: the report of a saved model on a text, and its errors."""

import json

import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402

from entflash.__main__ import main  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    path = tmp_path_factory.mktemp("model")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for m in model.modules():  # large queries: sparse attention
            if hasattr(m, "q_proj"):
                m.q_proj.weight.mul_(30)
    model.save_pretrained(path)
    return str(path)


def test_probe_reports_per_layer_and_head(tiny_llama, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 40)
    out = tmp_path / "r.json"
    assert main(["probe", tiny_llama, str(text), "--lengths", "64", "200", "--samples", "2", "--out", str(out),
                 "--plots", str(tmp_path / "p"), "--alpha", "1.5"]) == 0
    rep = json.loads(out.read_text())
    assert [e["length"] for e in rep["lengths"]] == [64, 200]
    for e in rep["lengths"]:
        assert len(e["layers"]) == 2
        for r in e["layers"]:
            assert len(r["support"]) == 4 and all(0 <= z <= 1 for z in r["zero_fraction"])
        assert e["mean"]["zero_fraction"] > 0.1  # α = 1.5 on large scores: sparse
    assert rep["alpha"] == [[1.5] * 4, [1.5] * 4]
    assert rep["dtype"] == "float32"  # the default on the CPU
    printed = capsys.readouterr().out
    assert "exactly-zero weights" in printed and "report:" in printed
    pytest.importorskip("matplotlib")
    assert (tmp_path / "p-sparsity.png").stat().st_size > 0
    assert (tmp_path / "p-attention.png").stat().st_size > 0


def test_probe_errors(tiny_llama, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("short text")
    assert main(["probe", str(tmp_path / "nope"), str(text)]) == 2
    assert "is not a folder holding a Hugging Face checkpoint" in capsys.readouterr().err
    assert main(["probe", tiny_llama, str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["probe", tiny_llama, str(text), "--lengths", "64"]) == 2
    assert "shorter than the requested length 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["probe", "--help"])


def test_probe_dtype(tiny_llama, tmp_path):
    """--dtype runs the model in that dtype (bfloat16 is the default on a GPU) and the report says which."""
    text = tmp_path / "t.txt"
    text.write_text("import os\nprint(os.getcwd())\n" * 20)
    out = tmp_path / "r.json"
    assert main(["probe", tiny_llama, str(text), "--lengths", "64", "--samples", "1", "--out", str(out), "--plots",
                 "none", "--dtype", "bfloat16"]) == 0
    rep = json.loads(out.read_text())
    assert rep["dtype"] == "bfloat16"
    assert all(0 <= z <= 1 for r in rep["lengths"][0]["layers"] for z in r["zero_fraction"])
    with pytest.raises(SystemExit):
        main(["probe", tiny_llama, str(text), "--dtype", "float64"])
