"""Bad cache options and contexts beyond max_context fail with clear errors and change nothing."""
from __future__ import annotations

import mlx.core as mx
import pytest

import mlx_model
from mlx_model.prefix_cache import PromptCache
from tests.test_kv_support import K_EQ_V, random_ids, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(**K_EQ_V)


@pytest.mark.parametrize("bits", [0, 2, 3, 6, 32, "8", 8.0, True])
def test_bad_kv_bits(model, bits):
    with pytest.raises(ValueError, match=r"kv_bits must be one of None, 16 .*8 or 4"):
        mlx_model.make_cache(model, kv_bits=bits)
    with pytest.raises(ValueError, match="kv_bits"):
        PromptCache(model, kv_bits=bits)


@pytest.mark.parametrize("bits", [None, 16, 8, 4])
def test_good_kv_bits(model, bits):
    assert mlx_model.make_cache(model, kv_bits=bits).offset == 0


@pytest.mark.parametrize("limit", [0, -5, 4097, "1000", 10.5])
def test_bad_max_context(model, limit):
    with pytest.raises(ValueError, match="max_context must be an integer from 1 to 4096"):
        mlx_model.make_cache(model, max_context=limit)


def test_quantized_pages_need_head_dims_in_groups_of_64():
    model = tiny_model(**{**K_EQ_V, "global_head_dim": 32})
    with pytest.raises(ValueError, match="groups of 64.*head_dim \\[32\\]"):
        mlx_model.make_cache(model, kv_bits=4)
    assert mlx_model.make_cache(model, kv_bits=16).offset == 0


def test_context_beyond_max_context_is_refused_before_any_work(model):
    cache = mlx_model.make_cache(model, max_context=50, page_size=16)
    list(mlx_model.stream_generate(model, random_ids(30), max_tokens=1, cache=cache))
    with pytest.raises(ValueError, match="51 tokens .*exceeds max_context=50"):
        list(mlx_model.stream_generate(model, random_ids(21), max_tokens=1, cache=cache))
    assert cache.offset == 30
    with pytest.raises(ValueError, match="exceeds max_context=50"):
        model(mx.array([random_ids(21)]), cache=cache)  # direct calls are checked by the layer caches
    assert cache.offset == 30


def test_generation_stops_at_max_context(model):
    cache = mlx_model.make_cache(model, max_context=40, page_size=16)
    out = mlx_model.generate(model, random_ids(30), max_tokens=50, cache=cache)
    assert len(out.tokens) == 11 and out.finish_reason == "length"
    assert cache.offset == 40


def test_prompt_cache_refuses_long_prompts_and_keeps_its_state(model):
    pc = PromptCache(model, max_context=64, page_size=16)
    first = random_ids(40)
    pc.prefill(first)
    with pytest.raises(ValueError, match="65 tokens exceeds max_context=64"):
        pc.prefill(random_ids(65))
    assert pc.tokens == first and pc.cache.offset == 40
    with pytest.raises(ValueError, match="empty"):
        pc.prefill([])
    with pytest.raises(ValueError, match="memory_budget"):
        PromptCache(model, memory_budget=0)
