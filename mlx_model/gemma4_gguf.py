"""Gemma 4 (the 12B, `gemma4`, and its assistant, `gemma4-assistant`) from GGUF files written by llama.cpp's
converter: the config rebuilt from the metadata, tensor names mapped back to the checkpoint's, the tokenizer
and chat template from the vocabulary (through `mlx_model.gguf`).

Facts from llama.cpp's `conversion/gemma.py` (the converter vendored by llama-cpp-python 0.3.36): Gemma 4 norms
are stored as they are (its `norm_shift` is 0, unlike Gemma 3's 1 + w); `layer_scalar` becomes
`blk.N.layer_output_scale.weight`; full layers' proportional RoPE is written as a `rope_freqs` tensor (1.0 for
rotated pairs, 1e30 for the rest) with the full head dim as the rotary dimension; per-layer KV-head counts as an
array; sliding layers as `sliding_window_pattern`; the assistant's masked embedder is not exported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mlx_model.gguf import GGUFError, GGUFFile

TARGET_ARCH, ASSISTANT_ARCH = "gemma4", "gemma4-assistant"
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight", "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight", "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "layer_output_scale.weight": "layer_scalar", "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight", "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight", "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight", "nextn.pre_projection.weight": "pre_projection.weight",
           "nextn.post_projection.weight": "post_projection.weight"}
_IN_CONFIG = {"rope_freqs.weight"}  # the full layers' rotary fraction, read into the config


def open_gemma4(path: str | Path) -> GGUFFile:
    """A Gemma 4 or Gemma 4 assistant GGUF file (GGUFError for anything else)."""
    gguf = GGUFFile(path)
    if gguf.architecture not in (TARGET_ARCH, ASSISTANT_ARCH):
        raise GGUFError(f"{path} holds a {gguf.architecture!r} model; this port runs Gemma 4 ({TARGET_ARCH!r}) "
                        f"and its assistant ({ASSISTANT_ARCH!r})")
    return gguf


def is_assistant(gguf: GGUFFile) -> bool:
    return gguf.architecture == ASSISTANT_ARCH


def raw_config(gguf: GGUFFile) -> dict[str, Any]:
    """The Hugging Face config.json the file was converted from, as far as the runtime needs it."""
    get = gguf.arch_get
    layers = int(get("block_count"))
    sliding = [bool(s) for s in get("attention.sliding_window_pattern")]
    kv_heads = get("attention.head_count_kv")
    kv_heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    swa_kv = next((k for k, s in zip(kv_heads, sliding) if s), kv_heads[0])
    full_kv = next((k for k, s in zip(kv_heads, sliding) if not s), swa_kv)
    head_full, head_swa = int(get("attention.key_length")), int(get("attention.key_length_swa"))
    ff = get("feed_forward_length")
    ff = ff if isinstance(ff, list) else [ff] * layers
    shared = int(get("attention.shared_kv_layers", 0) or 0)
    full = [i for i, s in enumerate(sliding) if not s]
    text: dict[str, Any] = {
        "model_type": "gemma4_unified_text",
        "vocab_size": gguf.tensor_shape("token_embd.weight")[0],
        "hidden_size": int(get("embedding_length")),
        "intermediate_size": int(ff[0]),
        "use_double_wide_mlp": len(set(ff)) > 1,
        "num_hidden_layers": layers,
        "num_attention_heads": int(get("attention.head_count")),
        "num_key_value_heads": int(swa_kv),
        "head_dim": head_swa,
        "global_head_dim": head_full,
        "num_global_key_value_heads": int(full_kv),
        # k_eq_v: the full layers have no value projection.
        "attention_k_eq_v": bool(full) and f"blk.{full[0]}.attn_v.weight" not in gguf.tensor_names
        and not is_assistant(gguf),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "sliding_window": int(get("attention.sliding_window")),
        "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": float(get("rope.freq_base_swa"))},
            "full_attention": {"rope_type": "proportional", "rope_theta": float(get("rope.freq_base")),
                               "partial_rotary_factor": _rotary_fraction(gguf)},
        },
        "final_logit_softcapping": get("final_logit_softcapping"),
        "num_kv_shared_layers": 0 if is_assistant(gguf) else shared,
        "max_position_embeddings": int(get("context_length")),
        "tie_word_embeddings": "output.weight" not in gguf.tensor_names,
        "hidden_activation": "gelu_pytorch_tanh",
    }
    specials = gguf.special_token_ids
    text.update({f"{k}_token_id": v for k, v in specials.items() if k in ("bos", "eos", "pad")})
    if not is_assistant(gguf):
        return text
    return {"model_type": "gemma4_unified_assistant", "text_config": text,
            "backbone_hidden_size": int(get("embedding_length_out")), "use_ordered_embeddings": False,
            "tie_word_embeddings": text["tie_word_embeddings"]}


def _rotary_fraction(gguf: GGUFFile) -> float:
    """llama.cpp writes 1.0 for each rotated frequency pair of the full layers and 1e30 for the others."""
    if "rope_freqs.weight" not in gguf.tensor_names:
        return 1.0
    factors = gguf.tensor("rope_freqs.weight")
    return float((factors < 1e20).sum()) / len(factors)


def checkpoint_name(name: str) -> str | None:
    """Our checkpoint name of a GGUF tensor (None for tensors folded into the config)."""
    if name in _IN_CONFIG:
        return None
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".", 2)
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER:
        return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}"
    raise GGUFError(f"tensor {name!r} has no Gemma 4 counterpart")


def tensors(gguf: GGUFFile) -> Iterator[tuple[str, np.ndarray]]:
    """(our name, float32 array) for each tensor, dequantized one at a time."""
    for name in gguf.tensor_names:
        target = checkpoint_name(name)
        if target is not None:
            yield target, gguf.tensor(name)


def tokenizer(gguf: GGUFFile):
    """Our Tokenizer from the file's vocabulary: BOS from the metadata; EOS and `<turn|>` end generation."""
    from mlx_model.tokenizer import END_OF_TURN, Tokenizer

    backend = gguf.tokenizer()
    ids = gguf.special_token_ids
    eos = {ids["eos"]} if "eos" in ids else set()
    turn = backend.token_to_id(END_OF_TURN)
    return Tokenizer(backend, ids.get("bos"), eos | ({turn} if turn is not None else set()))


def load(path: str | Path, *, dtype=None):
    """(model or drafter, raw config, tokenizer) from a GGUF file; tensors dequantized, then cast to `dtype`
    (default bfloat16, the original checkpoints' dtype)."""
    import mlx.core as mx

    from mlx_model.assistant import AssistantConfig, Drafter
    from mlx_model.config import ConfigError, TextConfig
    from mlx_model.gemma4 import Model
    from mlx_model.loader import ModelLoadError, _fill

    try:
        gguf = open_gemma4(path)
        raw = raw_config(gguf)
        module = Drafter(AssistantConfig.from_dict(raw)) if is_assistant(gguf) else Model(TextConfig.from_dict(raw))
        dtype = dtype or mx.bfloat16
        weights = {name: mx.array(value).astype(dtype) for name, value in tensors(gguf)}
        _fill(module, weights, Path(path), None)
        return module, raw, tokenizer(gguf)
    except (GGUFError, ConfigError) as exc:
        raise ModelLoadError(str(exc)) from None
