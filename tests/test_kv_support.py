"""Tiny random Gemma 4 models for the KV-cache tests (built directly in MLX; parity with transformers is
tested elsewhere). No tests here: shared helpers only."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_model.config import TextConfig
from mlx_model.gemma4 import Model

S, F = "sliding_attention", "full_attention"

# Full layers have head_dim 64 so that 8/4-bit pages (groups of 64) apply; k_eq_v as in the 12B.
K_EQ_V = dict(layer_types=[S, S, F, S, F], attention_k_eq_v=True, global_head_dim=64, num_global_key_value_heads=1)
# Full layers with their own v_proj: keys are stored too.
SEPARATE_KV = dict(layer_types=[S, F, S, F], attention_k_eq_v=False, global_head_dim=64)
# The last two layers reuse the K/V of the last sliding and the last full producer.
KV_SHARED = dict(layer_types=[S, F, S, F, S, F], num_kv_shared_layers=2, attention_k_eq_v=True,
                 global_head_dim=64, num_global_key_value_heads=1)


def tiny_model(seed: int = 0, **overrides) -> Model:
    """A float32 model with random weights scaled like tests/model_refs.py (moderate logits, clear top-1)."""
    raw = dict(model_type="gemma4_unified_text", vocab_size=256, hidden_size=64, intermediate_size=96,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
               final_logit_softcapping=30.0, max_position_embeddings=4096)
    raw.update(overrides)
    raw["num_hidden_layers"] = len(raw["layer_types"])
    model = Model(TextConfig.from_dict(raw))
    rng = np.random.default_rng(seed)
    params = {}
    for name, value in tree_flatten(model.parameters()):
        shape = value.shape
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            new = 0.2 + 0.3 * rng.random(shape)
        elif name.endswith("norm.weight") or name.endswith("layer_scalar"):
            new = 0.5 + rng.random(shape)
        elif name.endswith("embed_tokens.weight"):
            new = rng.standard_normal(shape) * 0.5
        else:
            scale = 0.3 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            new = rng.standard_normal(shape) * scale * shape[-1] ** -0.5
        params[name] = mx.array(new.astype(np.float32))
    model.update(tree_unflatten(list(params.items())))
    mx.eval(model.parameters())
    return model


def random_ids(length: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(3, 256, size=length)]
