"""Checkpoints written by other MLX converters (mlx_lm.convert, mlx_vlm.convert) from a random gemma4_unified
checkpoint: every packing they produce loads in our loader and gives the converting tool's own logits."""
from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from tests.model_refs import build_reference, make_tokenizer, text_config_kwargs

pytest.importorskip("mlx_lm")
pytest.importorskip("mlx_vlm")

S, F = "sliding_attention", "full_attention"
# Widths that split into groups of 64 and 32 everywhere, so every layer can be quantized in every mode.
TEXT = text_config_kwargs(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=32, global_head_dim=64, num_global_key_value_heads=1, attention_k_eq_v=True,
                          layer_types=[S, S, F, S, S, F], num_hidden_layers=6, final_logit_softcapping=30.0)
# mlx-lm reads gemma4_unified with its text-only gemma4 defaults (per-layer inputs, KV sharing, double-wide MLP):
# write the 12B's values explicitly, as the released config.json does.
EXPLICIT = dict(hidden_size_per_layer_input=0, num_kv_shared_layers=0, use_double_wide_mlp=False,
                vocab_size_per_layer_input=256, enable_moe_block=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    build_reference(path, TEXT, multimodal=True)
    config = json.loads((path / "config.json").read_text())
    config["text_config"].update(EXPLICIT, **{k: v for k, v in TEXT.items() if k not in config["text_config"]})
    config["vocab_size"] = TEXT["vocab_size"]  # mlx-lm's gemma4 copies the top-level value into text_config
    (path / "config.json").write_text(json.dumps(config))
    make_tokenizer(path)
    return path


IDS = np.random.default_rng(0).integers(3, 256, size=(1, 12))


def _ours(path) -> np.ndarray:
    model, _ = mlx_model.load(path)
    return np.array(model(mx.array(IDS)).astype(mx.float32))


def _check(ours: np.ndarray, theirs: np.ndarray, quantized: bool) -> None:
    # Identical packed weights; float32 activations: the two implementations differ only in summation order.
    atol = 2e-3 if quantized else 1e-3
    assert np.abs(ours - theirs).max() <= atol * max(1.0, np.abs(theirs).max())
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


LM_CASES = {
    "float32": dict(dtype="float32"),
    "4bit": dict(quantize=True, q_bits=4, q_group_size=64, dtype="float32"),
    "mixed_4_6": dict(quantize=True, quant_predicate="mixed_4_6", dtype="float32"),
    "mixed_3_6": dict(quantize=True, quant_predicate="mixed_3_6", dtype="float32"),
    "mxfp4": dict(quantize=True, q_mode="mxfp4", dtype="float32"),
    "mxfp8": dict(quantize=True, q_mode="mxfp8", dtype="float32"),
}


@pytest.mark.parametrize("case", list(LM_CASES))
def test_mlx_lm_convert(source, tmp_path, case):
    from mlx_lm import convert
    from mlx_lm.utils import load_model

    dst = tmp_path / case
    convert(str(source), str(dst), **LM_CASES[case])
    config = json.loads((dst / "config.json").read_text())
    if case.startswith("mixed"):  # the recipe names single layers with other bits than the default
        assert any(isinstance(v, dict) for v in config["quantization"].values())
    theirs, _ = load_model(dst)
    reference = np.array(theirs(mx.array(IDS)).astype(mx.float32))
    _check(_ours(dst), reference, "quantization" in config)


VLM_CASES = {
    "float32": dict(dtype="float32"),
    "4bit": dict(quantize=True, q_bits=4, q_group_size=64, dtype="float32"),
    "mixed_4_6": dict(quantize=True, quant_predicate="mixed_4_6", dtype="float32"),
    "nvfp4": dict(quantize=True, q_mode="nvfp4", q_bits=4, q_group_size=16, dtype="float32"),
}


@pytest.mark.parametrize("case", list(VLM_CASES))
def test_mlx_vlm_convert(source, tmp_path, case):
    from mlx_vlm import convert
    from mlx_vlm.utils import load_model

    dst = tmp_path / case
    convert(str(source), str(dst), **VLM_CASES[case])
    theirs = load_model(dst)
    out = theirs.language_model(mx.array(IDS))
    reference = np.array((out.logits if hasattr(out, "logits") else out).astype(mx.float32))
    config = json.loads((dst / "config.json").read_text())
    _check(_ours(dst), reference, "quantization" in config)
