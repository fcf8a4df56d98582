"""Chunked prefill and the context-limit arithmetic shared by plain and speculative generation."""
from __future__ import annotations

import mlx.core as mx

from mlx_model.cache import ModelCache
from mlx_model.compiled_step import hidden_states
from mlx_model.gemma4 import Model

PREFILL_CHUNK = 512  # for caches that do not set their own `prefill_chunk` (the simple reference cache)


def prefill_hidden(model: Model, ids: mx.array, cache: ModelCache, chunk: int | None = None) -> mx.array:
    """Feed ids [batch, length] into the cache in chunks; return the final-normed hidden state of the last
    position [batch, 1, hidden]. A prompt that does not fit the cache's max_context raises ValueError first.

    Chunks end at multiples of `chunk` counted from position 0 (not from where the cache starts), so a prompt
    is cut the same way whether it is prefilled cold or after a cached prefix: with quantized pages both then
    store identical pages. The paged cache's chunk is its page size (see `paged_cache`).
    """
    chunk = chunk or cache.prefill_chunk or PREFILL_CHUNK
    cache.check_room(ids.shape[1])
    base, last = cache.offset, ids.shape[1] - 1
    start = 0
    while start < last:
        end = min(last, ((base + start) // chunk + 1) * chunk - base)
        hidden_states(model, ids[:, start:end], cache)
        mx.eval(cache.arrays())
        start = end
    return hidden_states(model, ids[:, -1:], cache)


def prefill(model: Model, ids: mx.array, cache: ModelCache, chunk: int | None = None) -> mx.array:
    """`prefill_hidden`, returning the logits of the last position [batch, vocab]."""
    return model.logits(prefill_hidden(model, ids, cache, chunk))[:, -1, :]


def tokens_that_fit(cache: ModelCache, prompt_tokens: int, max_tokens: int) -> int:
    """How many of `max_tokens` can be generated after a prompt before the cache's max_context (the last
    generated token is not fed back, hence the + 1)."""
    if cache.max_context is None:
        return max_tokens
    return min(max_tokens, cache.max_context - cache.offset - prompt_tokens + 1)
