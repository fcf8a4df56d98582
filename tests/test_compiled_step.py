"""Compiled target steps (mlx_model/compiled_step.py) give bit-identical hidden states and tokens to the eager
forward: prefill chunks, decode steps and speculative verify steps; float32, bf16 and 4-bit weights; bf16 and
quantized KV pages."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model import compiled_step
from tests.test_speculative import tiny_pair


def _variant(target, kind: str):
    if kind == "bf16":
        target.set_dtype(mx.bfloat16)
    elif kind == "4bit":
        mlx_model.quantize_model(target, 4, group_size=32)
    mx.eval(target.parameters())
    return target


def _real_layout_target():
    """bench/mtp_curve.py's tiny target: the 12B's layer layout and random 4-bit weights, head dims 64 / 128
    (quantized KV pages need multiples of 64)."""
    from bench.mtp_curve import build_pair

    return build_pair(layers=7, tiny=True)[0]


@pytest.mark.parametrize("kind, kv_bits", [("float32", None), ("bf16", None), ("4bit", None),
                                           ("real-layout", None), ("real-layout", 8), ("real-layout", 4)])
def test_compiled_hidden_states_are_bit_identical(kind, kv_bits):
    target = _real_layout_target() if kind == "real-layout" else _variant(tiny_pair(seed=1)[0], kind)
    ids = mx.array(np.random.default_rng(0).integers(3, 256, size=(1, 70)))
    eager, compiled = (mlx_model.make_cache(target, kv_bits=kv_bits, page_size=16) for _ in range(2))
    for chunk in (ids[:, :32], ids[:, 32:37], ids[:, 37:38], ids[:, 38:70]):  # prefill, verify, decode sizes
        a = target.hidden_states(chunk, eager)
        b = compiled_step.hidden_states(target, chunk, compiled)
        assert mx.array_equal(a, b).item()
    eager.trim(3), compiled.trim(3)  # a rollback, then a step from the trimmed caches
    token = ids[:, 10:11]
    assert mx.array_equal(target.hidden_states(token, eager), compiled_step.hidden_states(target, token, compiled))


@pytest.mark.parametrize("kind", ["float32", "4bit"])
def test_compiled_generation_gives_the_eager_tokens(kind, monkeypatch):
    target, drafter = tiny_pair(seed=2)
    target = _variant(target, kind)
    prompt = np.random.default_rng(1).integers(3, 256, size=23).tolist()
    runs = {}
    for setting in ("0", "1"):
        monkeypatch.setenv(compiled_step.ENV_VAR, setting)
        runs[setting] = [mlx_model.generate(target, prompt, max_tokens=80).tokens,
                         mlx_model.generate(target, prompt, max_tokens=80, drafter=drafter, draft_length=3).tokens,
                         mlx_model.generate(target, prompt, max_tokens=40, temperature=0.8, seed=5).tokens]
    assert runs["0"] == runs["1"]
    assert runs["1"][0] == runs["1"][1]  # speculative = plain, compiled too
    assert getattr(target, "_compiled_steps", None) is not None  # the compiled path did run
