"""Gemma 4 text decoder (`gemma4_unified` / `gemma4_unified_text`) in MLX.

Mirrors transformers 5.23 `Gemma4UnifiedForCausalLM`: sliding and full attention layers with their own head
dims and KV-head counts, keys-as-values on full layers (`attention_k_eq_v`), KV-shared layers, default and
proportional RoPE, q/k/v RMS norms, attention scale 1.0, sandwich norms, a per-layer output scalar, scaled
embeddings, tied head and final logit softcap.
"""
from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_model.cache import LayerKVCache, ModelCache
from mlx_model.config import SLIDING, LayerSpec, RopeSpec, TextConfig
from mlx_model.paged_cache import ATTENTION_CHUNK, PAGE_SIZE, KeysFromValues, PagedKVCache, check_kv_bits
from mlx_model.ring_cache import RingKVCache


class RMSNorm(nn.Module):
    """x / rms(x) * weight, with the weight used as is (not 1 + weight); no weight for the value norm."""

    def __init__(self, dims: int, eps: float, with_scale: bool = True):
        super().__init__()
        self.eps = eps
        if with_scale:
            self.weight = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.get("weight"), self.eps)


class Rope:
    """Rotary embedding over the whole head (rotate-half pairing).

    "proportional" RoPE rotates only the first `partial_rotary_factor * head_dim / 2` frequency pairs, with
    exponents still taken over the full head dim; the other pairs get frequency 0 (left unchanged). This is
    transformers' `_compute_proportional_rope_parameters`.
    """

    def __init__(self, spec: RopeSpec, head_dim: int):
        half = head_dim // 2
        rotated = half if spec.rope_type == "default" else int(spec.partial_rotary_factor * head_dim // 2)
        inv_freq = np.zeros(half, dtype=np.float64)
        inv_freq[:rotated] = 1.0 / spec.theta ** (np.arange(0, 2 * rotated, 2, dtype=np.float64) / head_dim)
        inv_freq = (inv_freq / spec.factor).astype(np.float32)
        # mx.fast.rope takes periods (1 / inverse frequency); an infinite period is a frequency of 0.
        with np.errstate(divide="ignore"):
            self.periods = mx.array(np.where(inv_freq > 0, 1.0 / inv_freq, np.inf).astype(np.float32))
        self.head_dim = head_dim

    def __call__(self, x: mx.array, offset: int | mx.array) -> mx.array:
        return mx.fast.rope(x, self.head_dim, traditional=False, base=None, scale=1.0, offset=offset,
                            freqs=self.periods)


class Attention(nn.Module):
    def __init__(self, config: TextConfig, spec: LayerSpec):
        super().__init__()
        self.spec = spec
        self.heads = config.num_attention_heads
        self.window = config.sliding_window if spec.attention == SLIDING else None
        hidden, head_dim = config.hidden_size, spec.head_dim
        self.q_proj = nn.Linear(hidden, self.heads * head_dim, bias=False)
        self.q_norm = RMSNorm(head_dim, config.rms_norm_eps)
        if spec.kv_source is None:
            self.k_proj = nn.Linear(hidden, spec.num_kv_heads * head_dim, bias=False)
            if not spec.k_eq_v:
                self.v_proj = nn.Linear(hidden, spec.num_kv_heads * head_dim, bias=False)
            self.k_norm = RMSNorm(head_dim, config.rms_norm_eps)
            self.v_norm = RMSNorm(head_dim, config.rms_norm_eps, with_scale=False)
        self.o_proj = nn.Linear(self.heads * head_dim, hidden, bias=False)
        self.rope = Rope(config.rope[spec.attention], head_dim)

    def __call__(self, x: mx.array, offset: int, cache: LayerKVCache) -> mx.array:
        """`cache` is this layer's own cache, or for a KV-shared layer the cache of the layer it reads."""
        q = self.queries(x, offset)
        if self.spec.kv_source is None:
            cache.append(*self.keys_values(x, offset))
        return self.output(cache.attend(q, offset))

    def keys_values(self, x: mx.array, offset: int | mx.array) -> tuple[mx.array, mx.array]:
        """Rotated keys and normed values [batch, kv_heads, length, head_dim] of x (layers with their own K/V)."""
        batch, length, _ = x.shape
        head_dim = self.spec.head_dim
        raw = self.k_proj(x).reshape(batch, length, -1, head_dim)
        # With k_eq_v the values are the raw key projection (taken before k_norm and RoPE).
        v = raw if self.spec.k_eq_v else self.v_proj(x).reshape(batch, length, -1, head_dim)
        keys = self.rope(self.k_norm(raw).transpose(0, 2, 1, 3), offset)
        return keys, self.v_norm(v).transpose(0, 2, 1, 3)

    def queries(self, x: mx.array, offset: int | mx.array) -> mx.array:
        """Normed, rotated queries [batch, heads, length, head_dim] of x [batch, length, hidden]."""
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(batch, length, self.heads, self.spec.head_dim))
        return self.rope(q.transpose(0, 2, 1, 3), offset)

    def output(self, attended: mx.array) -> mx.array:
        """The output projection of attention results [batch, heads, length, head_dim]."""
        batch, _, length, _ = attended.shape
        return self.o_proj(attended.transpose(0, 2, 1, 3).reshape(batch, length, -1))

    def keys_from_values(self, values: mx.array, offset: int) -> mx.array:
        """k_eq_v layers: rebuild keys [batch, kv_heads, tokens, head_dim] at positions offset.. from the stored
        values. v = v_norm(raw) has no weight, so k_norm(raw) = v * k_norm.weight, and k = RoPE(that)."""
        return self.rope(values * self.k_norm.weight.astype(values.dtype), offset)


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, activation: str):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act = nn.gelu_approx if activation == "gelu_pytorch_tanh" else nn.gelu

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig, spec: LayerSpec):
        super().__init__()
        eps = config.rms_norm_eps
        self.self_attn = Attention(config, spec)
        self.mlp = MLP(config.hidden_size, spec.intermediate_size, config.hidden_activation)
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.layer_scalar = mx.ones((1,))

    def __call__(self, x: mx.array, offset: int, cache: LayerKVCache) -> mx.array:
        return self.after_attention(x, self.self_attn(self.input_layernorm(x), offset, cache))

    def after_attention(self, x: mx.array, attention_out: mx.array) -> mx.array:
        """The rest of the layer once attention has given `attention_out` for the layer input `x`."""
        x = x + self.post_attention_layernorm(attention_out)
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x * self.layer_scalar


class TextModel(nn.Module):
    layer_class = DecoderLayer  # a descendant architecture (gemma3.py) swaps in its own layer and norm
    norm_class = RMSNorm

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [self.layer_class(config, spec) for spec in config.layers]
        self.norm = self.norm_class(config.hidden_size, config.rms_norm_eps)

    def __call__(self, input_ids: mx.array, cache: ModelCache | None = None) -> mx.array:
        """Final-normed hidden states. Without a cache, a temporary one holds this call's keys and values."""
        if cache is None:
            cache = make_layer_caches(self.config)
        h = self.embed(input_ids)
        offset = cache.offset
        for index, layer in enumerate(self.layers):
            source = layer.self_attn.spec.kv_source
            h = layer(h, offset, cache[index if source is None else source])
        return self.norm(h)

    def embed(self, input_ids: mx.array) -> mx.array:
        """Scaled token embeddings (also the drafter's view of a token)."""
        h = self.embed_tokens(input_ids)
        # transformers multiplies by sqrt(hidden) cast to the weights' dtype (62.0 rather than 61.97 in bf16).
        return h * mx.array(math.sqrt(self.config.hidden_size), dtype=h.dtype)


def make_layer_caches(config: TextConfig, rollback_slack: int | None = None, *, paged: bool = False,
                      kv_bits: int | None = None, max_context: int | None = None, page_size: int = PAGE_SIZE,
                      attention_chunk: int = ATTENTION_CHUNK,
                      keys_from_values: dict[int, KeysFromValues] | None = None,
                      key_scales: str = "token") -> ModelCache:
    """One cache per layer that computes its own K/V; KV-shared layers get None (they read their source's).

    Simple exact caches by default; with `paged`, full layers get a `PagedKVCache` (pages of `page_size` tokens,
    `kv_bits` None/16, 8 or 4; k_eq_v layers store only V when `keys_from_values` gives their key rebuilder;
    `key_scales` "channel" quantizes stored keys per channel, see `paged_cache.encode`)
    and sliding layers a `RingKVCache`. Bad `kv_bits` / `max_context` raise ValueError.
    """
    if not paged:
        kwargs = {} if rollback_slack is None else {"slack": rollback_slack}
        return ModelCache([
            None if spec.kv_source is not None
            else LayerKVCache(config.sliding_window if spec.attention == SLIDING else None, **kwargs)
            for spec in config.layers
        ])
    bits = check_kv_bits(kv_bits)
    limit = config.max_position_embeddings
    if max_context is None:
        max_context = limit
    if type(max_context) is not int or not 1 <= max_context <= limit:
        raise ValueError(f"max_context must be an integer from 1 to {limit} (the model's max_position_embeddings);"
                         f" got {max_context!r}")
    if type(page_size) is not int or page_size < 1:
        raise ValueError(f"page_size must be a positive integer; got {page_size!r}")
    if bits is not None:
        odd = sorted({s.head_dim for s in config.layers if s.attention != SLIDING and s.head_dim % 64})
        if odd:
            raise ValueError(f"kv_bits={kv_bits} quantizes in groups of 64 along head_dim, but full-attention "
                             f"layers have head_dim {odd}; use kv_bits=None")
    slack = {} if rollback_slack is None else {"slack": rollback_slack}
    rebuild = keys_from_values or {}
    layers = []
    for index, spec in enumerate(config.layers):
        if spec.kv_source is not None:
            layers.append(None)
        elif spec.attention == SLIDING:
            layers.append(RingKVCache(config.sliding_window, max_context=max_context, **slack))
        else:
            layers.append(PagedKVCache(kv_bits=bits, page_size=page_size, max_context=max_context,
                                       keys_from_values=rebuild.get(index) if spec.k_eq_v else None,
                                       attention_chunk=attention_chunk, key_scales=key_scales))
    return ModelCache(layers, max_context=max_context, prefill_chunk=page_size)


class Model(nn.Module):
    """Gemma 4 causal LM: `model(input_ids, cache)` -> softcapped logits [batch, length, vocab]."""

    text_model_class = TextModel

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.model = self.text_model_class(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def __call__(self, input_ids: mx.array, cache: ModelCache | None = None, *,
                 num_logits: int | None = None) -> mx.array:
        """Logits for every position, or for the last `num_logits` positions only (what decoding needs)."""
        hidden = self.model(input_ids, cache)
        if num_logits is not None:
            hidden = hidden[:, -num_logits:, :]
        return self.logits(hidden)

    def hidden_states(self, input_ids: mx.array, cache: ModelCache | None = None) -> mx.array:
        """The final-normed hidden states, before the head."""
        return self.model(input_ids, cache)

    def logits(self, hidden: mx.array) -> mx.array:
        if self.config.tie_word_embeddings:
            logits = self.model.embed_tokens.as_linear(hidden)
        else:
            logits = self.lm_head(hidden)
        logits = logits.astype(mx.float32)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else mx.tanh(logits / cap) * cap

    def make_cache(self, rollback_slack: int | None = None, *, kv_bits: int | None = None,
                   max_context: int | None = None, paged: bool = True, **options: Any) -> ModelCache:
        """A paged cache (see `make_layer_caches`; `paged=False` gives the simple reference cache)."""
        rebuild = {i: layer.self_attn.keys_from_values for i, layer in enumerate(self.model.layers)
                   if layer.self_attn.spec.k_eq_v and layer.self_attn.spec.kv_source is None}
        return make_layer_caches(self.config, rollback_slack, paged=paged, kv_bits=kv_bits, max_context=max_context,
                                 keys_from_values=rebuild, **options)

    @staticmethod
    def sanitize(weights: dict[str, Any], config: TextConfig) -> dict[str, Any]:
        """Map checkpoint names (multimodal `model.language_model.*` or text-only `model.*`) to ours.

        Drops the vision/audio embedders (this port is text-only), rotary buffers and a tied `lm_head`.
        """
        out = {}
        for name, value in weights.items():
            for prefix, repl in (("model.language_model.", "model."), ("language_model.model.", "model."),
                                 ("language_model.lm_head.", "lm_head.")):
                if name.startswith(prefix):
                    name = repl + name[len(prefix):]
                    break
            if name.startswith(("model.embed_vision.", "model.embed_audio.", "model.vision_tower.",
                                "model.audio_tower.", "model.multi_modal_projector.")):
                continue
            if "rotary_emb" in name or (name.startswith("lm_head.") and config.tie_word_embeddings):
                continue
            out[name] = value
        return out


