"""Configuration of the Gemma 4 text decoder, parsed from a Hugging Face `config.json`.

Accepts the multimodal `gemma4_unified` config (decoder settings under `text_config`) and a bare
`gemma4_unified_text` config. Full-attention layers may have their own head dim and KV-head count, given
either as `per_layer_config` (what transformers 5.23 serializes) or as `global_head_dim` /
`num_global_key_value_heads` (what the released checkpoints and mlx-vlm use).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SLIDING = "sliding_attention"
FULL = "full_attention"
SUPPORTED_MODEL_TYPES = ("gemma4_unified", "gemma4_unified_text")


class ConfigError(ValueError):
    """A config.json that does not describe a model this port can run."""


def check_layers(layer_types: list[str], num_hidden_layers: int, hidden_activation: str) -> None:
    """Raise ConfigError unless there is one known type per layer and the MLP activation is supported."""
    if len(layer_types) != num_hidden_layers:
        raise ConfigError(f"layer_types has {len(layer_types)} entries but num_hidden_layers is {num_hidden_layers}")
    unknown = sorted(set(layer_types) - {SLIDING, FULL})
    if unknown:
        raise ConfigError(f"unsupported layer type(s) {unknown}; expected {SLIDING!r} or {FULL!r}")
    if hidden_activation not in ("gelu_pytorch_tanh", "gelu"):
        raise ConfigError(f"unsupported hidden_activation {hidden_activation!r}")


@dataclass(frozen=True)
class RopeSpec:
    rope_type: str = "default"  # "default" or "proportional"
    theta: float = 10_000.0
    partial_rotary_factor: float = 1.0
    factor: float = 1.0


@dataclass(frozen=True)
class LayerSpec:
    """What differs between layers: attention type, head geometry, KV sharing and MLP width."""

    attention: str  # SLIDING or FULL
    head_dim: int
    num_kv_heads: int
    k_eq_v: bool  # values come from the key projection (no v_proj)
    kv_source: int | None  # index of the layer whose K/V this layer reuses, None if it computes its own
    intermediate_size: int


@dataclass
class TextConfig:
    vocab_size: int = 262_144
    hidden_size: int = 3840
    intermediate_size: int = 15_360
    num_hidden_layers: int = 48
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 256
    global_head_dim: int = 512
    num_global_key_value_heads: int | None = None
    rms_norm_eps: float = 1e-6
    sliding_window: int = 1024
    layer_types: list[str] = field(default_factory=list)
    rope: dict[str, RopeSpec] = field(default_factory=dict)
    final_logit_softcapping: float | None = None
    attention_k_eq_v: bool = False
    num_kv_shared_layers: int = 0
    use_double_wide_mlp: bool = False
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 262_144
    tie_word_embeddings: bool = True
    bos_token_id: int = 2
    eos_token_id: list[int] = field(default_factory=lambda: [1])
    pad_token_id: int = 0
    # None when the file has no per_layer_config at all (then global_head_dim applies to full layers).
    per_layer_overrides: dict[int, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.layer_types:
            self.layer_types = [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(self.num_hidden_layers)]
        check_layers(self.layer_types, self.num_hidden_layers, self.hidden_activation)
        # transformers forces the last layer to full attention; do the same so the two agree.
        self.layer_types = list(self.layer_types[:-1]) + [FULL]
        self.rope = {SLIDING: RopeSpec(), FULL: RopeSpec("proportional", 1_000_000.0, 0.25), **self.rope}
        if not 0 <= self.num_kv_shared_layers < self.num_hidden_layers:
            raise ConfigError("num_kv_shared_layers must be at least 0 and less than num_hidden_layers")
        self.layers = [self._layer_spec(i) for i in range(self.num_hidden_layers)]

    def _layer_spec(self, index: int) -> LayerSpec:
        attention = self.layer_types[index]
        is_full = attention == FULL
        head_dim, kv_heads = self.head_dim, self.num_key_value_heads
        # transformers uses global_head_dim / num_global_key_value_heads only when no per_layer_config is given.
        if is_full and self.per_layer_overrides is None:
            head_dim = self.global_head_dim
            if self.attention_k_eq_v and self.num_global_key_value_heads is not None:
                kv_heads = self.num_global_key_value_heads
        override = (self.per_layer_overrides or {}).get(index, {})
        head_dim = override.get("head_dim", head_dim)
        kv_heads = override.get("num_key_value_heads", kv_heads)

        first_shared = self.num_hidden_layers - self.num_kv_shared_layers
        kv_source = None
        intermediate = self.intermediate_size
        if index >= first_shared:
            # A KV-shared layer reads the K/V of the last non-shared layer of its own attention type.
            producers = [i for i in range(first_shared) if self.layer_types[i] == attention]
            if not producers:
                raise ConfigError(f"layer {index} shares KV but no earlier layer has type {attention!r}")
            kv_source = producers[-1]
            if self.use_double_wide_mlp:
                intermediate *= 2
        return LayerSpec(attention, head_dim, kv_heads, self.attention_k_eq_v and is_full, kv_source, intermediate)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TextConfig":
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; this port runs {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        text = raw.get("text_config") if model_type == "gemma4_unified" else raw
        if not isinstance(text, dict):
            raise ConfigError("a gemma4_unified config needs a 'text_config' object")
        if text.get("use_bidirectional_attention") == "all":
            raise ConfigError("use_bidirectional_attention='all' (a non-causal encoder) is not supported")
        names = cls.__dataclass_fields__.keys() - {"rope", "per_layer_overrides", "eos_token_id", "layer_types"}
        kwargs: dict[str, Any] = {k: text[k] for k in names if text.get(k) is not None}
        kwargs["layer_types"] = list(text.get("layer_types") or [])
        eos = text.get("eos_token_id", raw.get("eos_token_id", 1))
        kwargs["eos_token_id"] = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        kwargs["rope"] = _parse_rope(text)
        kwargs["per_layer_overrides"] = _parse_per_layer(text, kwargs["layer_types"])
        try:
            return cls(**kwargs)
        except TypeError as exc:  # wrong value types in the file
            raise ConfigError(f"invalid config: {exc}") from None


def _parse_rope(text: dict[str, Any]) -> dict[str, RopeSpec]:
    params = text.get("rope_parameters") or {}
    specs = {}
    for layer_type, spec in params.items():
        if layer_type not in (SLIDING, FULL) or not isinstance(spec, dict):
            continue
        rope_type = spec.get("rope_type", "default")
        if rope_type not in ("default", "proportional"):
            raise ConfigError(f"unsupported rope_type {rope_type!r} for {layer_type}")
        specs[layer_type] = RopeSpec(
            rope_type,
            float(spec.get("rope_theta", 10_000.0)),
            float(spec.get("partial_rotary_factor", 1.0)),
            float(spec.get("factor", 1.0)),
        )
    return specs


def _parse_per_layer(text: dict[str, Any], layer_types: list[str]) -> dict[int, dict[str, Any]] | None:
    """`per_layer_config` keys are layer indices (as strings) or layer-type names."""
    if text.get("per_layer_config") is None:
        return None
    overrides: dict[int, dict[str, Any]] = {}
    num_layers = text.get("num_hidden_layers", len(layer_types))
    for key, values in text["per_layer_config"].items():
        if isinstance(key, str) and not key.isdigit():
            indices = [i for i, t in enumerate(layer_types) if t == key]
        else:
            indices = [int(key)]
        for i in indices:
            if not 0 <= i < num_layers:
                raise ConfigError(f"per_layer_config names layer {i}, but the model has {num_layers} layers")
            overrides.setdefault(i, {}).update(values)
    return overrides


def load_config(model_dir: str | Path) -> tuple[TextConfig, dict[str, Any]]:
    """Read `config.json` from a model directory; returns the parsed config and the raw dict."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: a model directory needs a config.json (Hugging Face layout)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return TextConfig.from_dict(raw), raw
