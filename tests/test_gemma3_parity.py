"""Gemma 3 from Hugging Face layouts: small random transformers checkpoints (text-only and multimodal) load
through our loader and give transformers' logits (torch, CPU, float32)."""
from __future__ import annotations

import numpy as np
import pytest

import mlx_model
import mlx.core as mx

TEXT = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=5, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
            max_position_embeddings=512)
# Layers: S S F S S (the last layer stays sliding, as in the 1B); linear RoPE scaling on full layers (4B+).
LAYERS = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]


def randomize(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):  # stored as the offset from 1
                param.copy_(torch.rand(param.shape, generator=gen) - 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * param.shape[-1] ** -0.5)


@pytest.mark.parametrize("multimodal", [False, True])
def test_gemma3_checkpoint_parity(tmp_path, multimodal):
    import torch
    from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextConfig

    torch.manual_seed(0)
    text = Gemma3TextConfig(**TEXT, layer_types=LAYERS,
                            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                                                "rope_theta": 1_000_000.0},
                                             "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}})
    if multimodal:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        model = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text.to_dict(), vision_config=vision,
                                                            mm_tokens_per_image=1))
    else:
        model = Gemma3ForCausalLM(text)
    randomize(model, seed=1)
    model.eval()
    model.save_pretrained(tmp_path)
    ids = np.random.default_rng(0).integers(3, 200, size=(2, 21))
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(ids)).logits.float().numpy()

    ours, raw = mlx_model.load_model(tmp_path)
    assert raw["model_type"] == ("gemma3" if multimodal else "gemma3_text")
    assert ours.config.layer_types == LAYERS and ours.config.rope["full_attention"].factor == 4.0
    logits = np.array(ours(mx.array(ids)))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    # Incremental decoding through the paged cache gives the same logits.
    cache = mlx_model.make_cache(ours)
    steps = [np.array(ours(mx.array(ids[:1, :13]), cache))[0]]
    steps += [np.array(ours(mx.array(ids[:1, i : i + 1]), cache))[0] for i in range(13, 21)]
    np.testing.assert_allclose(np.concatenate(steps), expected[0], atol=1e-4, rtol=0)
