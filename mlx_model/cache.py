"""The layer-cache protocol, a simple exact KV cache, and `ModelCache`, which holds one cache per layer.

Each layer cache appends keys/values and computes attention over what it holds (`attend`), so a model layer,
a KV-shared layer or the MTP drafter reading another layer's KV all use the same call, whatever the storage.
Full-attention layers keep every token. Sliding-window layers keep the last `window - 1 + slack` tokens: the
window is what attention needs, the slack is what can be rolled back (`trim`) after the window has been passed.
Buffers grow in steps so that appending one token does not copy the whole cache.

`LayerKVCache` is the plain reference; `make_cache` builds the paged/ring caches (`paged_cache`, `ring_cache`)
that implement the same protocol: `append(keys, values)`, `attend(queries, q_offset)`, `offset`, `trimmable()`,
`trim(n)`, plus `arrays()` and `nbytes`. `attention_inputs(q_offset, queries)` gives the keys, values and mask of
one fused attention call (None from a paged cache whose context needs several chunks), which a reader that asks
the same question repeatedly (the drafter, several draft steps at one position) computes once.
"""
from __future__ import annotations

import mlx.core as mx

GROWTH_STEP = 256
DEFAULT_ROLLBACK_SLACK = 256


class LayerKVCache:
    """Keys and values of one attention layer, shaped [batch, kv_heads, tokens, head_dim]."""

    def __init__(self, window: int | None = None, slack: int = DEFAULT_ROLLBACK_SLACK):
        self.window = window
        self.keep = None if window is None else window - 1 + slack
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.start = 0  # absolute position of the first stored token
        self.offset = 0  # absolute position just past the last stored token

    @property
    def stored(self) -> int:
        return self.offset - self.start

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes

    def arrays(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]

    def append(self, keys: mx.array, values: mx.array) -> None:
        """Store keys/values [batch, kv_heads, new_tokens, head_dim] for the next positions."""
        new = keys.shape[2]
        self._drop_old()
        used = self.stored
        if self.keys is None or used + new > self.keys.shape[2]:
            self._grow(keys, values, used + new)
        self.keys[..., used : used + new, :] = keys
        self.values[..., used : used + new, :] = values
        self.offset += new

    def attend(self, queries: mx.array, q_offset: int, scale: float = 1.0) -> mx.array:
        """Attention of queries [batch, heads, q_len, head_dim] at absolute positions q_offset.. over the
        stored keys: causal, and limited to the window on sliding layers."""
        keys, values, mask = self.attention_inputs(q_offset, queries)
        return attention(queries, keys, values, scale, mask)

    def attention_inputs(self, q_offset: int, queries: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        """(keys, values, mask) of one fused attention call for `queries` at positions q_offset.."""
        keys = self.keys[..., : self.stored, :]
        values = self.values[..., : self.stored, :]
        return keys, values, attention_mask(q_offset, queries.shape[2], self.start, self.stored, self.window)

    def _grow(self, keys: mx.array, values: mx.array, needed: int) -> None:
        capacity = (needed + GROWTH_STEP - 1) // GROWTH_STEP * GROWTH_STEP
        batch, heads, _, k_dim = keys.shape
        new_k = mx.zeros((batch, heads, capacity, k_dim), keys.dtype)
        new_v = mx.zeros((batch, heads, capacity, values.shape[3]), values.dtype)
        if self.keys is not None and self.stored:
            new_k[..., : self.stored, :] = self.keys[..., : self.stored, :]
            new_v[..., : self.stored, :] = self.values[..., : self.stored, :]
        self.keys, self.values = new_k, new_v

    def _drop_old(self) -> None:
        """Sliding layers: forget tokens beyond `keep` (in steps, so dropping stays amortized). Tokens the
        next chunk's first query still sees are never dropped (at least window - 1 stay)."""
        if self.keep is None or self.stored <= self.keep + GROWTH_STEP:
            return
        drop = self.stored - self.keep
        self.keys = self.keys[..., drop:, :]
        self.values = self.values[..., drop:, :]
        self.start += drop

    def trimmable(self) -> int:
        """How many of the newest tokens can be removed while keeping what attention needs before them."""
        if self.window is None or self.start == 0:
            return self.offset
        return max(0, self.stored - (self.window - 1))

    def trim(self, n: int) -> None:
        if n > self.trimmable():
            raise ValueError(f"cannot remove {n} tokens from a sliding layer that can roll back {self.trimmable()}")
        self.offset -= n


def attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float,
              mask: mx.array | None = None) -> mx.array:
    """Softmax attention of queries [batch, heads, q_len, dim] over keys/values [batch, kv_heads, n, dim];
    `mask` [q_len, n] (True = visible) or None.

    On the CPU the query heads that share a KV head are folded into rows of one product per KV head: MLX's CPU
    attention otherwise broadcasts the keys to every query head, which made a decode step over 400 keys with 4
    query heads per KV head 2.2x slower (101 vs 45 us; 2,000 keys: 469 vs 215 us). GPUs keep the fused kernel.
    """
    batch, heads, q_len, dim = queries.shape
    group = heads // keys.shape[1]
    if group == 1 or mx.default_device().type != mx.cpu or (mask is not None and mask.ndim != 2):
        return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)
    folded = queries.reshape(batch, keys.shape[1], group * q_len, dim)
    if mask is not None:
        mask = mx.tile(mask, (group, 1))
    out = mx.fast.scaled_dot_product_attention(folded, keys, values, scale=scale, mask=mask)
    return out.reshape(batch, heads, q_len, -1)


def attention_mask(q_start: int, q_len: int, k_start: int, k_len: int, window: int | None) -> mx.array | None:
    """Boolean mask [q_len, k_len] for absolute query positions q_start.. and key positions k_start...

    Causal; a sliding layer also hides keys `window` or more positions behind the query (transformers'
    sliding mask: key > query - window). None when nothing needs masking.
    """
    hides_future = k_start + k_len - 1 > q_start
    hides_past = window is not None and k_start <= q_start + q_len - 1 - window
    if not hides_future and not hides_past:
        return None
    q_pos = mx.arange(q_start, q_start + q_len)[:, None]
    k_pos = mx.arange(k_start, k_start + k_len)[None, :]
    mask = k_pos <= q_pos
    if window is not None:
        mask = mask & (k_pos > q_pos - window)
    return mask


class ModelCache:
    """The caches of all layers that compute their own K/V (KV-shared layers need none)."""

    def __init__(self, layers: list, max_context: int | None = None, prefill_chunk: int | None = None):
        self.layers = layers
        self.max_context = max_context
        self.prefill_chunk = prefill_chunk  # None: the caller's default chunk size

    @property
    def offset(self) -> int:
        """Number of tokens the cache holds (the position of the next token)."""
        return next((c.offset for c in self.layers if c is not None), 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache's arrays."""
        return sum(c.nbytes for c in self.layers if c is not None)

    def arrays(self) -> list[mx.array]:
        """The arrays holding the newest data (evaluate them to materialize a prefill chunk)."""
        return [a for c in self.layers if c is not None for a in c.arrays()]

    def check_room(self, new_tokens: int) -> None:
        """Raise ValueError if `new_tokens` more tokens would pass `max_context`."""
        if self.max_context is not None and self.offset + new_tokens > self.max_context:
            raise ValueError(f"context of {self.offset + new_tokens} tokens ({self.offset} cached + {new_tokens} "
                             f"new) exceeds max_context={self.max_context}; shorten the prompt or make the cache "
                             "with a larger max_context")

    def trim(self, n: int) -> int:
        """Remove up to `n` of the newest tokens from every layer; returns how many were removed."""
        n = min([max(0, n)] + [c.trimmable() for c in self.layers if c is not None])
        for c in self.layers:
            if c is not None:
                c.trim(n)
        return n

    def snapshot(self) -> list:
        """The state of every layer, restorable with `restore` (no copies: cache arrays are never mutated)."""
        if any(c is not None and not hasattr(c, "state") for c in self.layers):
            raise TypeError("snapshots need the paged caches from make_cache(model), not the simple LayerKVCache")
        return [None if c is None else c.state() for c in self.layers]

    def restore(self, snapshot: list) -> None:
        """Return every layer to the state of an earlier `snapshot` of this cache."""
        if len(snapshot) != len(self.layers):
            raise ValueError("the snapshot was taken from a cache with a different number of layers")
        for c, state in zip(self.layers, snapshot):
            if c is not None:
                c.set_state(state)

    def __getitem__(self, index: int):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)
