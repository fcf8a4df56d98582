"""Paged full-attention cache: exact with unquantized pages, measured error bounds with 8/4-bit pages."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model.cache import attention, attention_mask
from mlx_model.generate import prefill
from mlx_model.paged_cache import PagedKVCache
from mlx_model.ring_cache import RingKVCache
from tests.test_kv_support import K_EQ_V, KV_SHARED, SEPARATE_KV, random_ids, tiny_model

CONFIGS = {"k_eq_v": K_EQ_V, "separate_kv": SEPARATE_KV, "kv_shared": KV_SHARED}


def paged_logits(model, ids: mx.array, kv_bits=None, prompt: int = 150) -> np.ndarray:
    """Logits of positions prompt.. : a chunked prefill, then one token at a time (pages of 16 tokens,
    attention chunks of 32, so long contexts run the online-softmax path)."""
    cache = mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16, attention_chunk=32)
    first = np.array(prefill(model, ids[:, :prompt], cache))[:, None]
    steps = [np.array(model(ids[:, t : t + 1], cache=cache)) for t in range(prompt, ids.shape[1])]
    return np.concatenate([first] + steps, axis=1)[:, :-1]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", CONFIGS)
def test_unquantized_pages_match_the_simple_cache(name):
    model = tiny_model(**CONFIGS[name])
    ids = mx.array([random_ids(300, seed=1)])
    expected = np.array(model(ids))[:, 149:-1]  # one forward pass through the simple reference cache
    got = paged_logits(model, ids)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


# Chunks of 16 keys: the tail is a chunk of its own; of 40: it joins the last group of pages; of 104: one
# fused attention call over everything.
@pytest.mark.parametrize("chunk", [16, 40, 104])
@pytest.mark.parametrize("q_len,q_offset", [(1, 99), (7, 93), (40, 60), (100, 0)])
def test_online_softmax_attention_is_exact(q_len, q_offset, chunk):
    rng = np.random.default_rng(q_len)
    keys, values = (rng.standard_normal((2, 2, 100, 32)).astype(np.float32) for _ in range(2))
    queries = rng.standard_normal((2, 4, q_len, 32)).astype(np.float32)
    cache = PagedKVCache(page_size=8, attention_chunk=chunk)
    for lo in range(0, 100, 30):  # uneven appends: pages sealed lazily, a long tail split into chunks
        cache.append(mx.array(keys[:, :, lo : lo + 30]), mx.array(values[:, :, lo : lo + 30]))
    got = np.array(cache.attend(mx.array(queries), q_offset, scale=0.3))
    k, v = np.repeat(keys, 2, axis=1), np.repeat(values, 2, axis=1)
    scores = 0.3 * queries @ k.swapaxes(-1, -2)
    visible = np.arange(100)[None, :] <= np.arange(q_offset, q_offset + q_len)[:, None]
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ v
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("q_len", [1, 5])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_attention_folding_query_heads_matches_fused_attention(q_len, kv_heads):
    rng = np.random.default_rng(q_len * 10 + kv_heads)
    queries = mx.array(rng.standard_normal((2, 4, q_len, 32)).astype(np.float32))
    keys, values = (mx.array(rng.standard_normal((2, kv_heads, 50, 32)).astype(np.float32)) for _ in range(2))
    for mask in (None, attention_mask(45, q_len, 0, 50, None), attention_mask(45, q_len, 0, 50, 8)):
        expected = mx.fast.scaled_dot_product_attention(queries, keys, values, scale=0.2, mask=mask)
        got = attention(queries, keys, values, 0.2, mask)
        assert got.shape == expected.shape
        assert np.abs(np.array(got) - np.array(expected)).max() <= 1e-5


@pytest.mark.parametrize("kv_bits,max_logit_error,max_kl,mean_kl", [(8, 0.1, 1e-4, 2e-6), (4, 1.5, 0.05, 5e-4)])
def test_quantized_pages_stay_within_error_bounds(kv_bits, max_logit_error, max_kl, mean_kl):
    """Measured on these models (400 tokens, 250 decoded over 16-token pages): 8-bit max |dlogit| 0.03-0.05,
    KL mean ~2e-7; 4-bit max |dlogit| 0.45-0.8, KL mean 1e-5..1e-4, max 0.009. Bounds leave ~2x headroom."""
    for name, seed in (("k_eq_v", 0), ("k_eq_v", 1), ("separate_kv", 0)):
        model = tiny_model(seed=seed, **CONFIGS[name])
        ids = mx.array([random_ids(400, seed=seed)])
        exact, quantized = paged_logits(model, ids), paged_logits(model, ids, kv_bits=kv_bits)
        p, q = log_softmax(exact), log_softmax(quantized)
        kl = (np.exp(p) * (p - q)).sum(-1)
        assert np.abs(quantized - exact).max() <= max_logit_error, name
        assert kl.max() <= max_kl and kl.mean() <= mean_kl, (name, kl.max(), kl.mean())
        assert (quantized.argmax(-1) == exact.argmax(-1)).mean() >= 0.98


@pytest.mark.parametrize("kv_bits", [None, 4])
def test_page_aligned_prefill_equals_token_by_token_decoding(kv_bits):
    """Pages are sealed when the next token arrives, so a token sees its own page unquantized either way."""
    model = tiny_model(**K_EQ_V)
    ids = mx.array([random_ids(70, seed=5)])
    chunked = mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16)
    last = np.array(prefill(model, ids, chunked))
    stepped = mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16)
    for t in range(70):
        step = np.array(model(ids[:, t : t + 1], cache=stepped))[:, -1]
    assert np.abs(last - step).max() <= 1e-4


@pytest.mark.parametrize("kv_bits", [None, 8, 4])
@pytest.mark.parametrize("name", ["k_eq_v", "separate_kv"])
def test_kept_join_gives_what_a_fresh_gather_gives(name, kv_bits):
    """Decode steps reuse the joined keys/values of the previous call (keys rebuilt for new tokens only); with
    rollbacks across page boundaries and quantizing seals, every step still equals gathering everything anew."""
    model = tiny_model(**CONFIGS[name])
    ids = random_ids(90, seed=7)
    kept, fresh = (mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16) for _ in range(2))
    full_layers = [i for i, c in enumerate(kept.layers) if isinstance(c, PagedKVCache)]
    rebuilt_tokens = []
    for i in full_layers:
        rebuild = kept[i].keys_from_values
        if rebuild is not None:
            kept[i].keys_from_values = lambda v, start, f=rebuild: rebuilt_tokens.append(v.shape[2]) or f(v, start)
    prefill(model, mx.array([ids[:30]]), kept)
    prefill(model, mx.array([ids[:30]]), fresh)
    position = 30

    def step(feed: int, drop: int) -> None:
        nonlocal position
        tokens = mx.array([ids[position : position + feed]])
        for i in full_layers:
            fresh[i]._forget_joined()
        got, expected = np.array(model(tokens, cache=kept)), np.array(model(tokens, cache=fresh))
        assert np.abs(got - expected).max() <= 1e-5, (position, feed, drop)
        assert kept.trim(drop) == drop and fresh.trim(drop) == drop
        position += feed - drop

    for feed, drop in [(3, 2), (1, 0), (5, 4), (2, 0)] * 6:  # crosses pages 32, 48, 64
        step(feed, drop)
    # Roll back over a page the cache has just sealed: the page comes back as the tail.
    boundary = (position // 16 + 1) * 16
    for feed, drop in [(boundary - position, 0), (1, 3), (3, 0)]:
        step(feed, drop)
    assert all(kept[i]._joined is not None for i in full_layers)
    if name == "k_eq_v":  # most steps rebuilt the keys of their new tokens only
        assert sorted(rebuilt_tokens)[len(rebuilt_tokens) // 2] <= 5


def test_k_eq_v_layers_store_values_only_and_rebuild_keys_exactly():
    model = tiny_model(**K_EQ_V)
    attn = model.model.layers[2].self_attn  # a full k_eq_v layer
    x = mx.array(np.random.default_rng(0).standard_normal((1, 20, 64)).astype(np.float32))
    raw = attn.k_proj(x).reshape(1, 20, -1, attn.spec.head_dim)
    keys = attn.rope(attn.k_norm(raw).transpose(0, 2, 1, 3), 37)
    values = attn.v_norm(raw).transpose(0, 2, 1, 3)
    assert np.abs(np.array(attn.keys_from_values(values, 37)) - np.array(keys)).max() <= 1e-5

    caches = {}
    for bits in (None, 8, 4):
        cache = mlx_model.make_cache(model, kv_bits=bits, page_size=16)
        prefill(model, mx.array([random_ids(100)]), cache)
        caches[bits] = cache
    full = caches[None][2]
    assert isinstance(full, PagedKVCache) and isinstance(caches[None][0], RingKVCache)
    assert all(p.keys is None for p in full.pages) and full.tail_keys is None
    page_bytes = {bits: c[2].pages[0].nbytes for bits, c in caches.items()}
    # float32 values: 4 bytes; 8-bit: 1 + 8/64 (fp32 scale and bias per 64); 4-bit: 0.5 + 8/64.
    assert page_bytes[8] == page_bytes[None] * (1 + 8 / 64) / 4
    assert page_bytes[4] == page_bytes[None] * (0.5 + 8 / 64) / 4


def test_separate_kv_layers_store_keys_too():
    model = tiny_model(**SEPARATE_KV)
    cache = mlx_model.make_cache(model, kv_bits=8, page_size=16)
    prefill(model, mx.array([random_ids(50)]), cache)
    assert all(p.keys is not None for p in cache[1].pages)


def _attention_peak(context: int) -> float:
    cache = PagedKVCache(page_size=256)
    v = mx.random.normal((1, 1, context, 64), key=mx.random.key(0))
    cache.append(v, v)
    cache.seal()
    queries = mx.random.normal((1, 4, 256, 64), key=mx.random.key(1))
    mx.eval(cache.arrays(), queries)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.eval(cache.attend(queries, context - 256))
    return mx.get_peak_memory() - base


def test_attention_memory_does_not_grow_with_context():
    """256 queries x 4 heads over 64K keys: the fp32 score matrix alone would be 256 MiB."""
    small, large = _attention_peak(16384), _attention_peak(65536)
    assert large <= 128 * 2**20
    assert large <= 1.5 * small + 16 * 2**20
