"""GPU suite for the Hugging Face integration: torch.compile without graph breaks in the attention, bf16 training
steps of tiny Llama and ModernBERT models on the kernels (the model tests of test_transformers.py also run on CUDA
when it is there)."""

import pytest
import torch

pytest.importorskip("transformers")

import entflash.integrations.transformers as eft  # noqa: E402,F401
from test_transformers import _batch, build  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3", "gpt2", "bert", "modernbert"])
def test_compile_fullgraph(name):
    """torch.compile(model, fullgraph=True): no graph break anywhere, the attention included."""
    model = build(name, "entmax")
    ids, mask = _batch(name in ("llama", "qwen2", "gemma3", "gpt2"))
    res = model(input_ids=ids, attention_mask=mask)
    eager = res.logits if hasattr(res, "logits") else res.last_hidden_state
    compiled = torch.compile(model, fullgraph=True)
    res = compiled(input_ids=ids, attention_mask=mask)
    out = res.logits if hasattr(res, "logits") else res.last_hidden_state
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama", "modernbert"])
def test_bf16_training_step(name):
    model = build(name, "entmax").to(torch.bfloat16).train()
    params = eft.make_alpha_learnable(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids, mask = _batch(name == "llama", B=4, N=64)
    for _ in range(3):
        res = model(input_ids=ids, attention_mask=mask)
        out = res.logits if hasattr(res, "logits") else res.last_hidden_state
        loss = out.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert all(p.grad is not None for p in params)
        opt.step()
