"""Hugging Face models with attn_implementation="entmax" (entflash.integrations.transformers), tiny random configs.

Every family runs on the CPU (torch path) here and on CUDA (the kernels) in the GPU suite (test_gpu_transformers.py):
α = 1 against "sdpa", α = 1.5 against a float64 dense entmax registered the same way ("entmax_ref"), padding,
causality, generate() with the dynamic and the static cache, packed sequences, learnable α, and the errors.
"""

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

import entflash.integrations.transformers as eft  # noqa: E402
from entflash.reference import naive_entmax_attention  # noqa: E402
from transformers import AttentionInterface  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
V = 128  # vocabulary


def _reference_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                         **kwargs):
    """Dense float64 entmax with sdpa's mask handling: the model-level oracle."""
    alpha = getattr(module.config, "entmax_alpha", 1.5)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    Nq = query.shape[2]
    if attention_mask is None:
        causal = causal and Nq > 1
        if causal and key.shape[2] > Nq:
            key, value = key[:, :, :Nq], value[:, :, :Nq]
    else:
        causal = False
    am = attention_mask.bool() if attention_mask is not None else None
    out = naive_entmax_attention(query.double(), key.double(), value.double(), alpha=alpha, causal=causal,
                                 scale=scaling, attn_mask=am)
    return out.to(query.dtype).transpose(1, 2), None


AttentionInterface.register("entmax_ref", _reference_attention)
AttentionMaskInterface.register("entmax_ref", sdpa_mask)

LM = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, max_position_embeddings=64)
ENC = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
           max_position_embeddings=72)


def _family(name):
    """(config class, model class, config kwargs, decoder?) of a model family."""
    t = transformers
    return {
        "gpt2": (t.GPT2Config, t.GPT2LMHeadModel, dict(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                                        bos_token_id=1, eos_token_id=1), True),
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, LM, True),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, dict(LM, use_sliding_window=True, sliding_window=4,
                                                          max_window_layers=1), True),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, dict(LM, sliding_window=4), True),
        "gemma3": (t.Gemma3TextConfig, t.Gemma3ForCausalLM, dict(LM, head_dim=8, query_pre_attn_scalar=8,
                                                                 sliding_window=4, layer_types=["sliding_attention",
                                                                                                "full_attention"]), True),
        "bert": (t.BertConfig, t.BertModel, ENC, False),
        "roberta": (t.RobertaConfig, t.RobertaModel, dict(ENC, pad_token_id=1), False),
        "modernbert": (t.ModernBertConfig, t.ModernBertModel, dict(vocab_size=V, hidden_size=32, intermediate_size=64,
                                                                   num_hidden_layers=3, num_attention_heads=4,
                                                                   local_attention=4, global_attn_every_n_layers=3,
                                                                   max_position_embeddings=64, pad_token_id=0,
                                                                   bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                                                   sep_token_id=2), False),
    }[name]


DECODERS = ["gpt2", "llama", "qwen2", "mistral", "gemma3"]
ENCODERS = ["bert", "roberta", "modernbert"]


def build(name, impl, seed=0, **extra):
    cfg_cls, model_cls, kw, _ = _family(name)
    torch.manual_seed(seed)
    model = model_cls._from_config(cfg_cls(**kw, **extra), attn_implementation=impl)
    return model.to(DEV).eval()


def _out(model, ids, mask=None, **kw):
    res = model(input_ids=ids, attention_mask=mask, **kw)
    return res.logits if hasattr(res, "logits") else res.last_hidden_state


def _batch(left, B=3, N=11, seed=1):
    """Token ids and a padding mask, left padding (as generation uses) or right padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, N), generator=g)
    mask = torch.ones(B, N, dtype=torch.long)
    for b, n in zip(range(1, B), (4, 1)):
        if left:
            mask[b, :n] = 0
        else:
            mask[b, -n:] = 0
    return ids.to(DEV), mask.to(DEV)


@pytest.mark.parametrize("name", DECODERS + ENCODERS)
def test_alpha_one_matches_sdpa_and_alpha_15_matches_reference(name):
    decoder = _family(name)[3]
    ids, mask = _batch(decoder)
    valid = mask.bool()
    sdpa = build(name, "sdpa")
    ent = build(name, "entmax", entmax_alpha=1.0)
    ent.load_state_dict(sdpa.state_dict())
    torch.testing.assert_close(_out(ent, ids, mask)[valid], _out(sdpa, ids, mask)[valid], atol=2e-5, rtol=1e-4)
    ent.config.entmax_alpha = 1.5
    ref = build(name, "entmax_ref", entmax_alpha=1.5)
    ref.load_state_dict(sdpa.state_dict())
    got, want = _out(ent, ids, mask)[valid], _out(ref, ids, mask)[valid]
    torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)
    assert (got - _out(sdpa, ids, mask)[valid]).abs().max() > 1e-4  # α = 1.5 is not softmax


@pytest.mark.parametrize("name,left", [(n, False) for n in DECODERS + ENCODERS] + [(n, True) for n in DECODERS[1:]])
def test_padded_batch_equals_each_sequence(name, left):
    """Right padding everywhere; left padding too for the decoders with relative positions (RoPE: GPT-2's absolute
    positions move with left padding)."""
    model = build(name, "entmax")
    ids, mask = _batch(left)
    out = _out(model, ids, mask)
    for b in range(ids.shape[0]):
        keep = mask[b].bool()
        alone = _out(model, ids[b:b + 1, keep])
        torch.testing.assert_close(out[b, keep], alone[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", DECODERS)
def test_no_future_token_leaks(name):
    model = build(name, "entmax")
    ids, _ = _batch(True, B=2)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % V
    torch.testing.assert_close(_out(model, ids)[:, :7], _out(model, changed)[:, :7], atol=1e-6, rtol=0)


def _greedy_by_recomputation(model, ids, mask, steps):
    seq, m = ids, mask
    for _ in range(steps):
        nxt = _out(model, seq, m)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
        m = torch.cat([m, torch.ones_like(m[:, :1])], 1)
    return seq


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generate_with_cache_equals_recomputation(name, cache):
    """Greedy generation with left padding, with the dynamic and the static cache (whose prefill sees more keys
    than queries, and whose decode steps a 4-D mask over the whole cache), equals recomputing every step."""
    model = build(name, "entmax", entmax_alpha=1.5)
    ids, mask = _batch(True, B=2, N=7)
    want = _greedy_by_recomputation(model, ids, mask, 5)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, cache_implementation=cache,
                         pad_token_id=0)
    assert torch.equal(got, want)


# RoBERTa numbers positions from padding_idx + 1, the flattening collator's position_ids from 0: its packed and
# unpacked embeddings differ before any attention
@pytest.mark.parametrize("name", [n for n in DECODERS + ENCODERS if n != "roberta"])
def test_packed_sequences_equal_the_unpacked_batch(name):
    """transformers' flattening collator (one row, cu_seq_lens kwargs) gives each sequence's own outputs."""
    from transformers import DataCollatorWithFlattening

    model = build(name, "entmax")
    lens = [5, 9, 3]
    g = torch.Generator().manual_seed(2)
    feats = [{"input_ids": torch.randint(3, V, (n,), generator=g).tolist()} for n in lens]
    batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=True)(feats)
    kwargs = {k: (v.to(DEV) if isinstance(v, torch.Tensor) else v) for k, v in batch.items() if k != "labels"}
    ids = kwargs.pop("input_ids")
    out = _out(model, ids, **kwargs)
    start = 0
    for f, n in zip(feats, lens):
        alone = _out(model, torch.tensor([f["input_ids"]], device=DEV))
        torch.testing.assert_close(out[0, start:start + n], alone[0], atol=2e-5, rtol=1e-4)
        start += n


@pytest.mark.parametrize("name", DECODERS + ENCODERS)
def test_learnable_alpha_gets_gradients_and_is_saved(name, tmp_path):
    model = build(name, "entmax")
    params = eft.make_alpha_learnable(model, init=1.5, per_head=True)
    assert len(params) == len(eft.attention_modules(model))
    model.train()
    ids, mask = _batch(_family(name)[3])
    out = _out(model, ids, mask)
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    sd = model.state_dict()
    assert any(k.endswith("entmax_alpha_logit") for k in sd)
    with torch.no_grad():
        params[0].add_(0.3)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, attn_implementation="entmax").to(DEV).eval()
    model.eval()
    torch.testing.assert_close(_out(loaded, ids, mask), _out(model, ids, mask), atol=1e-5, rtol=1e-4)
    assert eft.learned_alpha(loaded) == eft.learned_alpha(model)
    import copy
    import io

    torch.save(model, io.BytesIO())  # the whole model still pickles
    twin = copy.deepcopy(model)
    assert twin.save_pretrained.model is twin


def test_alpha_sources_in_order():
    """entmax_alpha kwarg, then the module's attribute, then config.entmax_alpha (float, per layer, per head)."""
    model = build("llama", "entmax", entmax_alpha=[1.0, [1.0, 1.0, 1.0, 1.0]])
    ids, mask = _batch(True)
    valid = mask.bool()
    sdpa = build("llama", "sdpa")
    sdpa.load_state_dict(model.state_dict())
    torch.testing.assert_close(_out(model, ids, mask)[valid], _out(sdpa, ids, mask)[valid], atol=2e-5, rtol=1e-4)
    assert eft.learned_alpha(model) == [[1.0] * 4, [1.0] * 4]
    attn = eft.attention_modules(model)
    attn[0].entmax_alpha = 2.0
    assert eft.learned_alpha(model)[0] == [2.0] * 4
    assert (_out(model, ids, mask)[valid] - _out(sdpa, ids, mask)[valid]).abs().max() > 1e-4


def test_sparsemax_name_and_monitor(tmp_path):
    pytest.importorskip("matplotlib")
    model = build("llama", "sparsemax")
    assert eft.learned_alpha(model) == [[2.0] * 4] * 2
    ids, mask = _batch(True)
    with eft.SparsityMonitor(model) as mon:
        _out(model, ids * 0 + 5, mask)  # identical tokens: uniform scores, every visible key in the support
        first = mon.summary(reset=True)
        model.config.entmax_alpha = 2.0
        for m in eft.attention_modules(model):
            m.q_proj.weight.data *= 40  # large scores: sparse
        _out(model, ids, mask)
        second = mon.summary()
    for row in first:
        assert row["zero_fraction"] == pytest.approx([0.0] * 4, abs=1e-6)
    assert all(z > 0.2 for row in second for z in row["zero_fraction"])
    assert all(0.0 <= b <= 1.0 for row in second for b in row["block_sparsity"])
    assert mon.plot(str(tmp_path / "s.png")) and (tmp_path / "s.png").stat().st_size > 0
    assert not hasattr(eft.attention_modules(model)[0], "_entflash_monitor")  # detached on exit


def test_output_attentions_returns_the_weights():
    model = build("llama", "entmax")
    ids, mask = _batch(True)
    res = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    w = res.attentions[0]
    assert w.shape == (3, 4, 11, 11)
    rows = w.sum(-1).permute(0, 2, 1)[mask.bool()]  # rows of real tokens (pad rows see nothing: 0)
    assert ((rows - 1).abs() < 1e-5).all()
    assert (w.triu(1) == 0).all()  # causal
    assert (w * (1 - mask)[:, None, None, :] == 0).all()  # no weight on padding


def test_cross_attention_decoder():
    """BERT as a decoder with cross-attention: the cross layers attend to the encoder states through their mask."""
    name = "bert"
    cfg_cls, _, kw, _ = _family(name)
    torch.manual_seed(0)
    models = {impl: transformers.BertLMHeadModel._from_config(cfg_cls(**kw, is_decoder=True, add_cross_attention=True,
                                                                      entmax_alpha=1.0), attn_implementation=impl)
              for impl in ("sdpa", "entmax")}
    models["entmax"].load_state_dict(models["sdpa"].state_dict())
    ids, mask = _batch(True)
    enc = torch.randn(3, 6, 32, device=DEV)
    enc_mask = torch.ones(3, 6, dtype=torch.long, device=DEV)
    enc_mask[0, 4:] = 0
    outs = [m.to(DEV).eval()(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc,
                             encoder_attention_mask=enc_mask).logits for m in models.values()]
    valid = mask.bool()
    torch.testing.assert_close(outs[1][valid], outs[0][valid], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("feature", ["softcap", "s_aux", "sinks", "position_bias"])
def test_unsupported_features_raise(feature):
    model = build("llama", "entmax")
    module = eft.attention_modules(model)[0]
    q = torch.randn(1, 4, 3, 8)
    k = torch.randn(1, 2, 3, 8)
    with pytest.raises(NotImplementedError, match=feature):
        eft.entmax_attention_forward(module, q, k, k, None, **{feature: torch.zeros(1)})


def test_models_without_the_interface_raise():
    torch.manual_seed(0)
    cfg = transformers.GPTNeoConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=32,
                                    attention_types=[[["global"], 2]])
    model = transformers.GPTNeoForCausalLM(cfg)
    with pytest.raises(TypeError, match="AttentionInterface"):
        eft.make_alpha_learnable(model)
    with pytest.raises(TypeError, match="AttentionInterface"):
        eft.SparsityMonitor(model)
    sdpa = build("llama", "sdpa")
    with pytest.raises(ValueError, match="attn_implementation"):
        eft.make_alpha_learnable(sdpa)


def test_dropout_only_in_training():
    model = build("llama", "entmax", attention_dropout=0.5)
    ids, mask = _batch(True)
    a, b = _out(model, ids, mask), _out(model, ids, mask)
    assert torch.equal(a, b)
    model.train()
    c = _out(model, ids, mask)
    assert (c - a).abs().max() > 1e-4
    assert math.isfinite(c.float().sum().item())


def test_autocast_runs_attention_in_the_autocast_dtype():
    """Under torch.autocast a Llama's rotary embeddings leave q and k float32; the "entmax" attention computes on
    them cast to the autocast dtype, exactly as entmax_attention on those cast inputs outside autocast (what
    autocast does for sdpa), and its output has that dtype."""
    import entflash

    seen = []

    def capture(module, query, key, value, attention_mask, **kwargs):
        out, w = eft.entmax_attention_forward(module, query, key, value, attention_mask, **kwargs)
        seen.append((query.detach(), key.detach(), value.detach(), attention_mask, out.detach()))
        return out, w

    AttentionInterface.register("entmax_autocast_test", capture)
    AttentionMaskInterface.register("entmax_autocast_test", eft.entmax_mask)
    model = build("llama", "entmax_autocast_test")
    ids, _ = _batch(left=False)
    dev = ids.device.type
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16):
        logits = _out(model, ids)
    assert torch.isfinite(logits).all()
    assert len(seen) == LM["num_hidden_layers"]
    assert any(q.dtype == torch.float32 for q, *_ in seen)  # what the model hands over under autocast
    for q, k, v, mask, out in seen:
        assert mask is None and out.dtype == torch.bfloat16
        ref = entflash.entmax_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True).transpose(1, 2)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
