"""Rollback (`trim`) on every layer type, after the sliding ring has wrapped; snapshot / restore."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model.generate import prefill
from mlx_model.ring_cache import RingKVCache
from tests.test_kv_support import K_EQ_V, random_ids, tiny_model


def feed(model, cache, tokens: list[int]) -> np.ndarray:
    """Logits of each token fed one at a time."""
    return np.concatenate([np.array(model(mx.array([[t]]), cache=cache)) for t in tokens], axis=1)


@pytest.mark.parametrize("kv_bits", [None, 8, 4])
def test_rollback_after_the_ring_wraps_equals_never_generating(kv_bits):
    model = tiny_model(**K_EQ_V)  # window 16
    prompt, other = random_ids(120, seed=1), random_ids(12, seed=2)
    # A ring of window - 1 + 24 slots: 120 prompt tokens wrap it several times.
    cache = mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16, rollback_slack=24)
    drafted = list(mlx_model.stream_generate(model, prompt, max_tokens=20, cache=cache))
    rings = [c for c in cache.layers if isinstance(c, RingKVCache)]
    assert cache.offset == 139 and all(r.start > 0 for r in rings)  # wrapped: old positions overwritten
    assert len(drafted) == 20
    assert cache.trim(19) == 19  # crosses the page boundary at 128 too
    got = feed(model, cache, other)

    fresh = mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16, rollback_slack=24)
    prefill(model, mx.array([prompt]), fresh)
    expected = feed(model, fresh, other)
    assert np.abs(got - expected).max() <= 1e-5


def test_trim_is_limited_by_the_sliding_slack():
    model = tiny_model(**K_EQ_V)
    cache = mlx_model.make_cache(model, page_size=16, rollback_slack=24)
    prefill(model, mx.array([random_ids(200)]), cache)
    assert cache.trim(100) == 24  # the ring keeps window - 1 tokens before what it can remove
    assert cache.offset == 200 - 24
    assert cache.trim(1) == 0
    with pytest.raises(ValueError, match="roll back 0"):
        cache[0].trim(1)


@pytest.mark.parametrize("kv_bits", [None, 4])
def test_snapshot_restore_returns_to_the_same_state(kv_bits):
    model = tiny_model(**K_EQ_V)
    cache = mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16, rollback_slack=24)
    prefill(model, mx.array([random_ids(90, seed=3)]), cache)
    snapshot = cache.snapshot()
    offset, probe = cache.offset, random_ids(5, seed=4)
    before = feed(model, cache, probe)
    cache.trim(5)
    feed(model, cache, random_ids(60, seed=5))  # wraps the rings again and seals new pages
    cache.trim(20)
    cache.restore(snapshot)
    assert cache.offset == offset
    assert np.abs(feed(model, cache, probe) - before).max() <= 1e-6


def test_simple_cache_has_no_snapshots():
    with pytest.raises(TypeError, match="paged"):
        mlx_model.make_cache(tiny_model(**K_EQ_V), paged=False).snapshot()
