"""Keys quantized per channel (`key_scales="channel"`): what helps real Gemma 3 heads at 4 bits."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model.paged_cache import PagedKVCache
from tests.test_kv_support import SEPARATE_KV, random_ids, tiny_model


def keys_with_outlier_channels(tokens: int, dim: int = 128) -> mx.array:
    rng = np.random.default_rng(0)
    scale = np.ones(dim)
    scale[[3, 40, 97]] = 20.0  # a few large channels, as real post-RoPE keys have
    return mx.array((rng.standard_normal((1, 1, tokens, dim)) * scale).astype(np.float32))


@pytest.mark.parametrize("bits", [4, 8])
def test_per_channel_keys_round_trip_better_on_outlier_channels(bits):
    keys = keys_with_outlier_channels(512)
    values = mx.zeros_like(keys)
    errors = {}
    for scales in ("token", "channel"):
        cache = PagedKVCache(kv_bits=bits, page_size=256, key_scales=scales)
        cache.append(keys, values)
        cache.append(keys[..., :1, :], values[..., :1, :])  # seals both pages
        cache.trim(258)  # into the older page: it comes back dequantized as the tail (255 tokens)
        stored = np.array(cache.tail_keys)
        errors[scales] = np.abs(stored - np.array(keys[..., :255, :])).mean()
    assert errors["channel"] < errors["token"] / 2


def test_per_channel_keys_through_the_model_match_decoding():
    """Page-aligned prefill and token-by-token decoding see the same quantized pages."""
    model = tiny_model(**SEPARATE_KV)
    ids = random_ids(80)
    a = mlx_model.make_cache(model, kv_bits=4, page_size=64, key_scales="channel")
    b = mlx_model.make_cache(model, kv_bits=4, page_size=64, key_scales="channel")
    model(mx.array([ids[:64]]), a)
    chunk = model(mx.array([ids[64:]]), a)[0]  # the second page in one chunk, over the quantized first page
    model(mx.array([ids[:64]]), b)
    steps = [model(mx.array([[t]]), b)[0, -1] for t in ids[64:]]
    np.testing.assert_allclose(np.array(chunk), np.array(mx.stack(steps)), atol=1e-4, rtol=0)
    exact = mlx_model.make_cache(model)
    model(mx.array([ids[:64]]), exact)
    assert np.abs(np.array(chunk) - np.array(model(mx.array([ids[64:]]), exact)[0])).max() > 0  # it quantized


def test_bad_key_scales_raise():
    with pytest.raises(ValueError, match="key_scales"):
        PagedKVCache(kv_bits=4, key_scales="row")
    with pytest.raises(ValueError, match="multiple of 64"):
        PagedKVCache(kv_bits=4, page_size=48, key_scales="channel")
