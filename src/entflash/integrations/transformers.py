"""Hugging Face transformers (>= 5) with α-entmax attention: `attn_implementation="entmax"`.

    import entflash.integrations.transformers as eft    # registers "entmax" and "sparsemax"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="entmax")
    alphas = eft.make_alpha_learnable(model, init=1.5, per_head=True)
    with eft.SparsityMonitor(model) as mon:
        model(**batch); print(mon.summary())

Importing the module (or calling register()) registers an attention function and a mask function under each
name, in transformers' AttentionInterface and AttentionMaskInterface: without the mask function transformers
would pass attention_mask=None and drop padding and causality silently. How a call is mapped:

- the mask: None, a 2-D padding mask (B, Nk) (the compact form the mask function returns for plain causal or
  bidirectional masks whose causal alignment is bottom-right) -> key_padding_mask, or a 4-D bool / 0-(-inf)
  float mask -> attn_mask;
- causal: the `is_causal` kwarg, else `module.is_causal`; with no mask, a causal call with more keys than
  queries is the prefill of an empty static cache, handled as transformers' sdpa path does (the keys past the
  queries are the cache's empty slots: they are cut off);
- `cu_seq_lens_q/k` and `max_length_q/k` (packed sequences) -> entmax_attention_varlen, without reading the
  offsets on the host (transformers' collator makes them);
- `sliding_window` -> window: (w - 1, 0) for causal layers, (w - 1, w - 1) for bidirectional ones (ModernBERT's
  local layers), the window transformers' masks encode, so the kernels can skip the tiles outside it;
- `scaling` -> scale; `dropout` -> dropout_p (transformers passes 0 in eval); k and v are cast to q's dtype;
- `output_attentions=True` -> the dense weights are returned as well (O(N^2) memory);
- `softcap`, attention sinks (`s_aux` / `sinks`) and `position_bias` (T5's relative bias) raise
  NotImplementedError naming the model feature: entmax attention with them is not defined here.

α comes from, in order: an `entmax_alpha` forward kwarg; the module's learnable α (make_alpha_learnable) or an
`entmax_alpha` attribute; `config.entmax_alpha` (a float, one per layer, or one list per layer with one value
per head); else 1.5 for "entmax" and 2.0 for "sparsemax". α = 1 reproduces the "sdpa" model.
"""

from __future__ import annotations

import inspect
import math
from typing import List, Optional

import torch
from torch import nn

from ..attention import autocast_inputs, entmax_attention, entmax_attention_varlen
from ..entmax import entmax
from ..reference import visible

try:
    from transformers import AttentionInterface
    from transformers.masking_utils import (
        AttentionMaskInterface, bidirectional_mask_function, causal_mask_function, prepare_padding_mask, sdpa_mask,
    )
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("entflash.integrations.transformers needs transformers >= 5: pip install 'entflash[hf]'") from e

from .sparsity import SparsityMonitor, record_forward  # noqa: E402

__all__ = ["register", "make_alpha_learnable", "SparsityMonitor", "attention_modules", "learned_alpha",
           "sync_alpha_to_config", "NAMES"]

NAMES = {"entmax": 1.5, "sparsemax": 2.0}
_UNSUPPORTED = {
    "softcap": "attention logit soft-capping (softcap, e.g. Gemma 2's attn_logit_softcapping)",
    "s_aux": "attention sinks (s_aux, e.g. GPT-OSS)",
    "sinks": "attention sinks (sinks)",
    "position_bias": "an additive relative position bias (position_bias, e.g. T5)",
}


# ----------------------------------------------------------------------------
# the mask function
# ----------------------------------------------------------------------------


def entmax_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=causal_mask_function,
                attention_mask=None, local_size=None, allow_is_causal_skip=True, allow_is_bidirectional_skip=False,
                use_vmap=False, device="cpu", **kwargs):
    """transformers' mask function for "entmax": the compact form where it means the same, else sdpa_mask's.

    A plain causal mask (causal_mask_function) whose queries end where the keys end (bottom-right alignment:
    q_offset - kv_offset = kv_length - q_length) and a plain bidirectional mask, with no window: None without
    padding, else the (B, kv_length) bool padding mask, which the attention function applies as key_padding_mask
    (cheaper for the kernels than a 4-D mask). Everything else (static caches, sliding and chunked windows, packed
    sequences, custom patterns): the 4-D bool mask (B, 1, Nq, Nk) of sdpa_mask, or its None where sdpa's
    is_causal would do (the attention function mirrors sdpa there)."""
    plain_causal = mask_function is causal_mask_function and q_offset - kv_offset == kv_length - q_length
    plain_full = mask_function is bidirectional_mask_function
    if local_size is None and (plain_causal or plain_full):
        padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
        if padding is None:
            return None
        return padding[:, kv_offset:kv_offset + kv_length].bool()
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     mask_function=mask_function, attention_mask=attention_mask, local_size=local_size,
                     allow_is_causal_skip=allow_is_causal_skip, allow_is_bidirectional_skip=allow_is_bidirectional_skip,
                     use_vmap=use_vmap, device=device, **kwargs)


# ----------------------------------------------------------------------------
# α
# ----------------------------------------------------------------------------


def _layer_index(module) -> Optional[int]:
    idx = getattr(module, "layer_idx", None)
    if idx is None:
        idx = getattr(module, "_entflash_layer", None)
    return idx


def _config_alpha(module, default: float):
    """α from module.config.entmax_alpha: a float, a per-layer list, or a per-layer list of per-head lists."""
    cfg = getattr(module, "config", None)
    a = getattr(cfg, "entmax_alpha", None) if cfg is not None else None
    if a is None:
        return default
    if isinstance(a, (int, float)):
        return float(a)
    layer = _layer_index(module)
    if layer is None:
        raise ValueError(f"config.entmax_alpha is a per-layer list, but {type(module).__name__} has no layer_idx: "
                         "give a single float, or call entflash.integrations.transformers.attention_modules(model) "
                         "first (it numbers the attention modules)")
    if not 0 <= layer < len(a):
        raise ValueError(f"config.entmax_alpha has {len(a)} entries, but layer {layer} needs one")
    a = a[layer]
    return float(a) if isinstance(a, (int, float)) else torch.tensor(a, dtype=torch.float32)


def _alpha(module, kwargs, name: str, device):
    if "entmax_alpha" in kwargs and kwargs["entmax_alpha"] is not None:
        a = kwargs.pop("entmax_alpha")
    elif isinstance(getattr(module, "entmax_alpha_logit", None), torch.Tensor):
        a = 1.0 + torch.sigmoid(module.entmax_alpha_logit)
    elif getattr(module, "entmax_alpha", None) is not None:
        a = module.entmax_alpha
    else:
        a = _config_alpha(module, NAMES[name])
    kwargs.pop("entmax_alpha", None)
    if isinstance(a, torch.Tensor):
        a = a.to(device=device, dtype=torch.float32)
        if a.numel() == 1:
            a = a.reshape(())
    return a


# ----------------------------------------------------------------------------
# the attention function
# ----------------------------------------------------------------------------


def _check_unsupported(name, module, kwargs):
    for key, what in _UNSUPPORTED.items():
        if kwargs.get(key) is not None:
            raise NotImplementedError(
                f"{type(module).__name__} passes {what}: the {name!r} attention implementation does not support it; "
                "use attn_implementation='eager' or 'sdpa' for this model")


def _dense_weights(q, k, attention_mask, causal, window, scale, alpha):
    """The attention weights (B, H, Nq, Nk), for output_attentions=True."""
    G = q.shape[1] // k.shape[1]
    s = torch.matmul(q.float(), k.float().repeat_interleave(G, 1).transpose(-1, -2)) * scale
    kpm = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
    am = attention_mask if attention_mask is not None and attention_mask.dim() == 4 else None
    vis = visible(q.shape[2], k.shape[2], causal, kpm, q.device, window, am)
    a = alpha.reshape(1, -1, 1, 1) if isinstance(alpha, torch.Tensor) and alpha.dim() else alpha
    return entmax(s.masked_fill(~vis, -math.inf), a, dim=-1)


def _forward(name, module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
             sliding_window=None, **kwargs):
    _check_unsupported(name, module, kwargs)
    alpha = _alpha(module, kwargs, name, query.device)
    # under autocast, the inputs entmax_attention computes on (rotary embeddings leave q and k float32), so that
    # the SparsityMonitor's statistics come from the same inputs as the output
    query, key, value = autocast_inputs(query, key, value)
    key, value = key.to(query.dtype), value.to(query.dtype)
    B, H, Nq, D = query.shape
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    window = None
    if sliding_window is not None:
        w = int(sliding_window) - 1
        window = (w, 0) if causal else (w, w)
    kpm = am = None
    if attention_mask is None:
        # no mask: causal only with more than one query (one query sees every key); more keys than queries with a
        # causal layer is the prefill of an empty static cache, whose slots past the queries are empty: cut off, as
        # the sdpa path does (its is_causal is top-left aligned)
        causal = causal and Nq > 1
        if causal and key.shape[2] > Nq:
            key, value = key[:, :, :Nq], value[:, :, :Nq]
    elif attention_mask.dim() == 2:
        kpm = attention_mask.bool()
        if kpm.shape[-1] != key.shape[2]:
            raise ValueError(f"a 2-D attention mask of {kpm.shape[-1]} keys for {key.shape[2]} keys")
    else:
        am = attention_mask
        causal = False  # the 4-D mask holds the pattern
    scale = float(scaling) if scaling is not None else None
    drop = float(dropout) if module.training else 0.0
    kw = dict(alpha=alpha, scale=scale, window=window, dropout_p=drop)
    cu_q = kwargs.get("cu_seq_lens_q")
    monitor = getattr(module, "_entflash_monitor", None)
    want_stats = monitor is not None and monitor.wants(module)
    packed = cu_q is not None and B == 1
    if packed and kpm is None and am is None:
        cu_k = kwargs.get("cu_seq_lens_k", cu_q)
        res = entmax_attention_varlen(
            query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1),
            cu_q.to(device=query.device, dtype=torch.int32), cu_k.to(device=query.device, dtype=torch.int32),
            int(kwargs.get("max_length_q")), int(kwargs.get("max_length_k")), causal=causal, return_stats=want_stats, check_offsets=False, **kw)
        out = (res.out if want_stats else res)[None]  # (1, Nq, H, D)
        if want_stats:
            record_forward(module, query, key, res.tau.unsqueeze(0), res.support.unsqueeze(0), alpha, scale, causal,
                           window, None, None, cu_q=cu_q)
    else:
        if packed:
            # packed sequences with a mask as well (a padding mask, or a 4-D mask of the whole packed row): the
            # sequences are kept apart by a block-diagonal mask from cu_seq_lens (one row of tokens whose causal
            # and window bounds hold within each sequence, as the flattening collator packs them)
            am = _same_sequence(cu_q, key.shape[2], query.device) if am is None else am.bool() & _same_sequence(
                cu_q, key.shape[2], query.device)
        res = entmax_attention(query, key, value, causal=causal, key_padding_mask=kpm, attn_mask=am,
                               return_stats=want_stats, **kw)
        out = (res.out if want_stats else res).transpose(1, 2)
        if want_stats:
            record_forward(module, query, key, res.tau, res.support, alpha, scale, causal, window, kpm, am)
    weights = None
    if kwargs.get("output_attentions"):
        s = scale if scale is not None else 1.0 / math.sqrt(D)
        weights = _dense_weights(query, key, kpm if kpm is not None else am, causal, window, s, alpha)
    return out, weights


def _same_sequence(cu, n, device):
    """(1, 1, n, n) bool: tokens i and j of one packed row belong to the same sequence (offsets cu)."""
    seq = torch.searchsorted(cu.to(device=device, dtype=torch.int64), torch.arange(n, device=device), right=True)
    return (seq[:, None] == seq[None, :])[None, None]


def entmax_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The "entmax" attention function (AttentionInterface's signature; returns (B, Nq, H, D), weights or None)."""
    return _forward("entmax", module, query, key, value, attention_mask, dropout, scaling, **kwargs)


def sparsemax_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The "sparsemax" attention function: α = 2 unless configured otherwise."""
    return _forward("sparsemax", module, query, key, value, attention_mask, dropout, scaling, **kwargs)


def register() -> None:
    """Register "entmax" and "sparsemax" in transformers' AttentionInterface and AttentionMaskInterface (both are
    needed: without a mask function transformers passes no mask). Idempotent; importing this module calls it."""
    AttentionInterface.register("entmax", entmax_attention_forward)
    AttentionInterface.register("sparsemax", sparsemax_attention_forward)
    for name in NAMES:
        AttentionMaskInterface.register(name, entmax_mask)


register()


# ----------------------------------------------------------------------------
# model helpers
# ----------------------------------------------------------------------------


def _uses_interface(cls) -> bool:
    try:
        src = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in src or "get_interface(" in src


def attention_modules(model: nn.Module) -> List[nn.Module]:
    """The modules of `model` that call transformers' attention interface, in model order, each numbered
    (module.layer_idx, or its position): what make_alpha_learnable and SparsityMonitor act on. Raises TypeError
    for a model with none (its attention would ignore attn_implementation="entmax" and stay softmax)."""
    found = [m for m in model.modules() if _uses_interface(type(m))]
    if not found:
        raise TypeError(
            f"{type(model).__name__} has no attention module that calls transformers' AttentionInterface, so "
            "attn_implementation='entmax' would be ignored and its attention would stay softmax; entflash supports "
            "models whose attention goes through ALL_ATTENTION_FUNCTIONS (Llama, GPT-2, BERT, ModernBERT, Qwen, "
            "Mistral, Gemma 3 and most recent models)")
    for i, m in enumerate(found):
        m._entflash_layer = i
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl not in NAMES:
        raise ValueError(f"{type(model).__name__} runs attn_implementation={impl!r}; load or build it with "
                         "attn_implementation='entmax' (or call model.set_attn_implementation('entmax')) first")
    return found


def _num_heads(module) -> int:
    for attr in ("num_heads", "num_attention_heads", "n_heads", "n_head"):
        n = getattr(module, attr, None)
        if isinstance(n, int):
            return n
    cfg = getattr(module, "config", None)
    n = getattr(cfg, "num_attention_heads", None)
    if isinstance(n, int):
        return n
    raise TypeError(f"cannot tell how many heads {type(module).__name__} has")


def make_alpha_learnable(model: nn.Module, init: Optional[float] = None, per_head: bool = True) -> List[nn.Parameter]:
    """Give every attention module of `model` a learnable α: one per head (per_head) or one per layer, as
    α = 1 + sigmoid(θ), always inside (1, 2). init: the starting α (default: config.entmax_alpha where set, else
    1.5). Returns the θ parameters (`<module>.entmax_alpha_logit`, saved in the model's state dict), e.g. for their
    own learning rate. save_pretrained also writes the learned values into config.entmax_alpha (a per-layer list of
    per-head lists), so that from_pretrained gives the same attention; calling this again on the loaded model
    continues learning from them."""
    mods = attention_modules(model)
    params = []
    for m in mods:
        H = _num_heads(m) if per_head else 1
        start = init if init is not None else _config_alpha(m, NAMES[model.config._attn_implementation])
        a = torch.as_tensor(start, dtype=torch.float32).reshape(-1).expand(H).clone()
        if not ((a > 1) & (a < 2)).all():
            raise ValueError(f"make_alpha_learnable: init must lie in (1, 2) (1 + sigmoid(θ) never reaches 1 or 2), "
                             f"got {start}")
        theta = torch.log((a - 1) / (2 - a))
        dev = next((p.device for p in m.parameters()), None) or next(model.parameters()).device
        m.entmax_alpha_logit = nn.Parameter(theta.to(dev))
        params.append(m.entmax_alpha_logit)
    if not isinstance(model.__dict__.get("save_pretrained"), _SaveWithAlpha):
        model.save_pretrained = _SaveWithAlpha(model)
    sync_alpha_to_config(model)
    return params


class _SaveWithAlpha:
    """The save_pretrained of a model with learnable α: writes the α in use into config.entmax_alpha first (the
    config is saved before the weights), then saves as usual. A class, not a closure, so that the model still
    pickles and deep-copies."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        sync_alpha_to_config(self.model)
        return type(self.model).save_pretrained(self.model, *args, **kwargs)


def learned_alpha(model: nn.Module) -> List[List[float]]:
    """α per layer and head as the attention uses it now (learnable α, module attribute or config)."""
    out = []
    for m in attention_modules(model):
        a = _alpha(m, {}, model.config._attn_implementation, torch.device("cpu"))
        H = _num_heads(m)
        a = a.detach().cpu().reshape(-1).expand(H) if isinstance(a, torch.Tensor) else torch.full((H,), float(a))
        out.append([round(float(x), 6) for x in a])
    return out


def sync_alpha_to_config(model: nn.Module) -> None:
    """Write the α the attention uses now into model.config.entmax_alpha (per layer, per head)."""
    model.config.entmax_alpha = learned_alpha(model)
