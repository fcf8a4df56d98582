"""Gemma 3 text decoder (`gemma3_text`, and the text part of `gemma3`) in MLX.

Gemma 3 is Gemma 4's ancestor; this file reuses Gemma 4's embedding, MLP, RoPE, decoder loop, head and caches
(`gemma4.py`) and spells out every difference (transformers 5.23 `Gemma3ForCausalLM` is the reference):

- RMSNorm scales by 1 + weight (Gemma 4 uses the weight as is); q/k norms too.
- Attention scores are scaled by query_pre_attn_scalar ** -0.5 (Gemma 4: 1.0).
- No value norm, no keys-as-values, no KV-shared layers, no per-layer output scalar.
- Final logit softcap only when the config sets one (released Gemma 3 configs do not).
- RoPE: full rotation on every layer; theta 10k on sliding layers and 1M on full ones, with optional linear
  scaling (the 4B+ models) on full layers only.
- Layer types: every 6th layer full by default, and the last layer is not forced to full attention.

`from_gguf` maps a llama.cpp GGUF (architecture "gemma3") to a Hugging Face `gemma3_text` config and weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_model import gemma4
from mlx_model.cache import LayerKVCache
from mlx_model.config import FULL, SLIDING, ConfigError, LayerSpec, RopeSpec, check_layers
from mlx_model.gguf import GGUFFile, unshift_norm

MODEL_TYPES = ("gemma3", "gemma3_text")
SLIDING_WINDOW_PATTERN = 6  # transformers' default; llama.cpp hard-codes the same for gemma3 GGUFs
LOCAL_ROPE_THETA = 10_000.0


@dataclass
class Gemma3Config:
    """A `gemma3_text` config; defaults are transformers' `Gemma3TextConfig` defaults."""

    vocab_size: int = 262_208
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    query_pre_attn_scalar: float = 256
    rms_norm_eps: float = 1e-6
    sliding_window: int = 4096
    layer_types: list[str] = field(default_factory=list)
    rope: dict[str, RopeSpec] = field(default_factory=dict)
    final_logit_softcapping: float | None = None
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 131_072
    tie_word_embeddings: bool = True
    bos_token_id: int = 2
    eos_token_id: list[int] = field(default_factory=lambda: [1])
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if not self.layer_types:
            self.layer_types = [FULL if (i + 1) % SLIDING_WINDOW_PATTERN == 0 else SLIDING
                                for i in range(self.num_hidden_layers)]
        check_layers(self.layer_types, self.num_hidden_layers, self.hidden_activation)  # last layer: as given
        self.rope = {SLIDING: RopeSpec(theta=LOCAL_ROPE_THETA), FULL: RopeSpec(theta=1_000_000.0), **self.rope}
        self.layers = [LayerSpec(t, self.head_dim, self.num_key_value_heads, False, None, self.intermediate_size)
                       for t in self.layer_types]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Gemma3Config":
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"unsupported model_type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
        text = raw.get("text_config", {}) if model_type == "gemma3" else raw
        if not isinstance(text, dict):
            raise ConfigError("a gemma3 config's 'text_config' must be an object")
        for key, why in (("attn_logit_softcapping", "attention logit softcapping (Gemma 2)"),
                         ("attention_bias", "attention biases"),
                         ("use_bidirectional_attention", "bidirectional attention")):
            if text.get(key):
                raise ConfigError(f"{key} is set: {why} is not supported")
        names = cls.__dataclass_fields__.keys() - {"rope", "eos_token_id", "layer_types"}
        kwargs: dict[str, Any] = {k: text[k] for k in names if text.get(k) is not None}
        kwargs["layer_types"] = list(text.get("layer_types") or [])
        eos = text.get("eos_token_id", raw.get("eos_token_id", 1))
        kwargs["eos_token_id"] = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        kwargs["rope"] = _parse_rope(text)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid config: {exc}") from None


def _parse_rope(text: dict[str, Any]) -> dict[str, RopeSpec]:
    """`rope_parameters` per layer type (transformers 5), or the older rope_theta / rope_local_base_freq /
    rope_scaling keys. Linear scaling divides the inverse frequencies by `factor` (what `gemma4.Rope` does)."""
    params = text.get("rope_parameters")
    if not params:
        params = {FULL: dict(text.get("rope_scaling") or {}), SLIDING: {}}
        params[FULL].setdefault("rope_theta", text.get("rope_theta", 1_000_000.0))
        params[SLIDING]["rope_theta"] = text.get("rope_local_base_freq", LOCAL_ROPE_THETA)
    specs = {}
    for layer_type, spec in params.items():
        if layer_type not in (SLIDING, FULL) or not isinstance(spec, dict):
            continue
        rope_type = spec.get("rope_type", spec.get("type", "default"))
        if rope_type not in ("default", "linear"):
            raise ConfigError(f"unsupported rope_type {rope_type!r} for {layer_type} (default or linear)")
        default_theta = LOCAL_ROPE_THETA if layer_type == SLIDING else 1_000_000.0
        factor = float(spec.get("factor", 1.0)) if rope_type == "linear" else 1.0
        specs[layer_type] = RopeSpec("default", float(spec.get("rope_theta", default_theta)), 1.0, factor)
    return specs


class RMSNorm(nn.Module):
    """x / rms(x) * (1 + weight): Gemma 3 stores the scale's offset from 1."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = mx.zeros((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, 1.0 + self.weight, self.eps)


class Attention(nn.Module):
    """Grouped-query attention with q/k norms and RoPE; scores scaled by query_pre_attn_scalar ** -0.5."""

    def __init__(self, config: Gemma3Config, spec: LayerSpec):
        super().__init__()
        self.spec = spec
        self.heads = config.num_attention_heads
        hidden, head_dim = config.hidden_size, spec.head_dim
        self.scale = float(config.query_pre_attn_scalar) ** -0.5
        self.q_proj = nn.Linear(hidden, self.heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, spec.num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, spec.num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(head_dim, config.rms_norm_eps)
        self.rope = gemma4.Rope(config.rope[spec.attention], head_dim)

    def __call__(self, x: mx.array, offset: int, cache: LayerKVCache) -> mx.array:
        batch, length, _ = x.shape
        head_dim = self.spec.head_dim
        q = self.q_norm(self.q_proj(x).reshape(batch, length, self.heads, head_dim))
        k = self.k_norm(self.k_proj(x).reshape(batch, length, -1, head_dim))
        v = self.v_proj(x).reshape(batch, length, -1, head_dim)  # no value norm in Gemma 3
        q = self.rope(q.transpose(0, 2, 1, 3), offset)
        cache.append(self.rope(k.transpose(0, 2, 1, 3), offset), v.transpose(0, 2, 1, 3))
        attended = cache.attend(q, offset, self.scale)
        return self.o_proj(attended.transpose(0, 2, 1, 3).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """Sandwich-normed attention and GeGLU MLP, like Gemma 4's layer without the output scalar."""

    def __init__(self, config: Gemma3Config, spec: LayerSpec):
        super().__init__()
        eps = config.rms_norm_eps
        self.self_attn = Attention(config, spec)
        self.mlp = gemma4.MLP(config.hidden_size, spec.intermediate_size, config.hidden_activation)
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps)

    def __call__(self, x: mx.array, offset: int, cache: LayerKVCache) -> mx.array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), offset, cache))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class TextModel(gemma4.TextModel):
    """Scaled embeddings, the decoder layers and the final norm (Gemma 4's loop with Gemma 3's layers)."""

    layer_class = DecoderLayer
    norm_class = RMSNorm


class Model(gemma4.Model):
    """Gemma 3 causal LM: `model(input_ids, cache)` -> logits [batch, length, vocab]; same cache protocol,
    `make_cache` (paged/quantized pages on full layers, rings on sliding layers) and generation as Gemma 4."""

    text_model_class = TextModel

    @staticmethod
    def sanitize(weights: dict[str, Any], config: Gemma3Config) -> dict[str, Any]:
        """Gemma 4's name mapping, plus the older multimodal layout's top-level vision tower and projector."""
        weights = gemma4.Model.sanitize(weights, config)
        return {k: v for k, v in weights.items() if not k.startswith(("vision_tower.", "multi_modal_projector."))}


# -- GGUF ---------------------------------------------------------------------------------------------------
# llama.cpp tensor names (per block) -> transformers names; norms are stored as 1 + w.
_GGUF_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def gguf_tensor_name(name: str) -> str:
    """The transformers name of a llama.cpp gemma3 tensor ("blk.3.attn_q.weight" -> "model.layers.3....")."""
    stem, _, suffix = name.rpartition(".")
    if stem.startswith("blk."):
        _, index, part = stem.split(".", 2)
        if part in _GGUF_BLOCK_NAMES:
            return f"model.layers.{index}.{_GGUF_BLOCK_NAMES[part]}.{suffix}"
    elif stem in _GGUF_TOP_NAMES:
        return f"{_GGUF_TOP_NAMES[stem]}.{suffix}"
    raise ConfigError(f"unknown gemma3 GGUF tensor {name!r}")


def from_gguf(gguf: GGUFFile) -> tuple[dict[str, Any], Iterator[tuple[str, np.ndarray]]]:
    """A `gemma3_text` config.json dict, and the float32 weights under transformers' names (dequantized one at
    a time as the iterator is consumed), from a gemma3 GGUF."""
    if gguf.architecture != "gemma3":
        raise ConfigError(f"{gguf.path} holds architecture {gguf.architecture!r}, not gemma3")
    hidden, heads = gguf.arch_get("embedding_length"), gguf.arch_get("attention.head_count")
    layers, head_dim = gguf.arch_get("block_count"), gguf.arch_get("attention.key_length")
    # GGUF does not record query_pre_attn_scalar; llama.cpp uses head_dim, except hidden / heads for the 27B.
    scalar = hidden // heads if (hidden, layers) == (5376, 62) else head_dim
    full_rope: dict[str, Any] = {"rope_type": "default", "rope_theta": gguf.arch_get("rope.freq_base", 1e6)}
    if gguf.arch_get("rope.scaling.type") == "linear":
        full_rope = {**full_rope, "rope_type": "linear", "factor": gguf.arch_get("rope.scaling.factor")}
    tokens = gguf.get("tokenizer.ggml.tokens")
    specials = gguf.special_token_ids
    eos = [specials.get("eos", 1)]
    if "<end_of_turn>" in tokens:  # instruction-tuned Gemma 3 ends its turns with it
        eos.append(tokens.index("<end_of_turn>"))
    config = {
        "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
        "vocab_size": gguf.tensor_shape("token_embd.weight")[0], "hidden_size": hidden,
        "intermediate_size": gguf.arch_get("feed_forward_length"), "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": gguf.arch_get("attention.head_count_kv"),
        "head_dim": head_dim, "query_pre_attn_scalar": scalar,
        "rms_norm_eps": gguf.arch_get("attention.layer_norm_rms_epsilon"),
        "sliding_window": gguf.arch_get("attention.sliding_window"),
        "max_position_embeddings": gguf.arch_get("context_length"),
        "layer_types": [FULL if (i + 1) % SLIDING_WINDOW_PATTERN == 0 else SLIDING for i in range(layers)],
        "rope_parameters": {SLIDING: {"rope_type": "default", "rope_theta": LOCAL_ROPE_THETA}, FULL: full_rope},
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "bos_token_id": specials.get("bos", 2), "eos_token_id": eos, "pad_token_id": specials.get("pad", 0),
    }
    names = {name: gguf_tensor_name(name) for name in gguf.tensor_names}  # unknown names fail here, up front

    def weights() -> Iterator[tuple[str, np.ndarray]]:
        for name, hf_name in names.items():
            value = gguf.tensor(name)
            yield hf_name, unshift_norm(value) if name.endswith("norm.weight") else value

    return config, weights()
