"""Our MLX MTP drafter against transformers' Gemma4UnifiedAssistantForCausalLM, given identical shared KV."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model.assistant import SharedKV
from tests.model_refs import build_reference_drafter, text_config_kwargs

torch = pytest.importorskip("torch")

S, F = "sliding_attention", "full_attention"
BACKBONE = 48

DRAFTERS = {
    "tied_head": dict(kwargs=dict(layer_types=[S, S, S, F], num_hidden_layers=4, global_head_dim=32,
                                  attention_k_eq_v=True, num_global_key_value_heads=1, sliding_window=6),
                      ordered=False),
    "centroid_head": dict(kwargs=dict(layer_types=[S, F], num_hidden_layers=2, global_head_dim=32,
                                      attention_k_eq_v=True, num_global_key_value_heads=1, sliding_window=6,
                                      use_double_wide_mlp=True), ordered=True),
}


@pytest.fixture(scope="module", params=list(DRAFTERS))
def drafter_pair(request, tmp_path_factory):
    spec = DRAFTERS[request.param]
    kwargs = text_config_kwargs(**spec["kwargs"])
    path = tmp_path_factory.mktemp(request.param)
    reference = build_reference_drafter(path, kwargs, backbone_hidden=BACKBONE, ordered=spec["ordered"])
    return reference, mlx_model.load_drafter(path), kwargs


@pytest.mark.parametrize("kv_len", [5, 20])  # shorter and longer than the sliding window
@pytest.mark.parametrize("batch", [1, 2])
def test_drafter_matches_reference(drafter_pair, kv_len, batch):
    reference, drafter, kwargs = drafter_pair
    rng = np.random.default_rng(kv_len * 10 + batch)
    kv_heads, head_dim = kwargs["num_key_value_heads"], kwargs["head_dim"]
    shared = {
        F: [rng.standard_normal((batch, 1, kv_len, 32)).astype(np.float32) for _ in range(2)],
        S: [rng.standard_normal((batch, kv_heads, kv_len, head_dim)).astype(np.float32) for _ in range(2)],
    }
    inputs = rng.standard_normal((batch, 1, 2 * BACKBONE)).astype(np.float32)
    position = kv_len  # the drafted-from token sits right after the target's KV
    with torch.no_grad():
        out = reference(inputs_embeds=torch.tensor(inputs), position_ids=torch.tensor([[position]] * batch),
                        shared_kv_states={k: tuple(torch.tensor(a) for a in v) for k, v in shared.items()})
    window = kwargs["sliding_window"]
    readers = {F: SharedKV(*(mx.array(a) for a in shared[F])),
               S: SharedKV(*(mx.array(a) for a in shared[S]), visible=window + 1)}
    logits, hidden = drafter(mx.array(inputs), position, readers)
    ref_logits = out.logits.numpy()
    assert np.abs(np.array(hidden) - out.last_hidden_state.numpy()).max() <= 1e-4
    assert np.abs(np.array(logits) - ref_logits).max() <= 1e-4
    assert (np.array(logits).argmax(-1) == ref_logits.argmax(-1)).all()


def test_drafter_load_errors(tmp_path):
    with pytest.raises(mlx_model.ModelLoadError, match="config.json"):
        mlx_model.load_drafter(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gemma4_unified_text"}')
    with pytest.raises(mlx_model.ModelLoadError, match="expected 'gemma4_unified_assistant'"):
        mlx_model.load_drafter(tmp_path)


def test_convert_quantizes_a_drafter_that_load_drafter_reads(drafter_pair, tmp_path):
    from agent.cli import main as cli_main
    from mlx.utils import tree_flatten

    reference, drafter, _ = drafter_pair
    src = tmp_path / "src"
    reference.save_pretrained(src)
    assert cli_main(["convert", str(src), str(tmp_path / "q8"), "--bits", "8"]) == 0
    loaded = mlx_model.load_drafter(tmp_path / "q8")
    assert any(name.endswith(".scales") for name, _ in tree_flatten(loaded.parameters()))
    rng = np.random.default_rng(0)
    kv = {F: SharedKV(mx.array(rng.standard_normal((1, 1, 9, 32)), dtype=mx.float32),
                      mx.array(rng.standard_normal((1, 1, 9, 32)), dtype=mx.float32)),
          S: SharedKV(mx.array(rng.standard_normal((1, 2, 9, 16)), dtype=mx.float32),
                      mx.array(rng.standard_normal((1, 2, 9, 16)), dtype=mx.float32))}
    inputs = mx.array(rng.standard_normal((1, 1, 2 * BACKBONE)), dtype=mx.float32)
    full_logits, _ = drafter(inputs, 9, kv)
    q_logits, _ = loaded(inputs, 9, kv)
    assert np.abs(np.array(full_logits) - np.array(q_logits)).max() < 0.05 * np.abs(np.array(full_logits)).max()
