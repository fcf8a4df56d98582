"""A simple, exact KV cache for incremental decoding.

Full-attention layers keep every token. Sliding-window layers keep the last `window - 1 + slack` tokens: the
window is what attention needs, the slack is what can be rolled back (`trim`) after the window has been passed.
Buffers grow in steps so that appending one token does not copy the whole cache.
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

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, int]:
        """Append new keys/values; return everything stored and the absolute position of its first token."""
        new = keys.shape[2]
        used = self.stored
        if self.keys is None or used + new > self.keys.shape[2]:
            self._grow(keys, values, used + new)
        self.keys[..., used : used + new, :] = keys
        self.values[..., used : used + new, :] = values
        self.offset += new
        out = self.keys[..., : used + new, :], self.values[..., : used + new, :], self.start
        self._drop_old()
        return out

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
        """Sliding layers: forget tokens beyond `keep`, in steps so that dropping stays amortized."""
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


class ModelCache:
    """The caches of all layers that compute their own K/V (KV-shared layers need none)."""

    def __init__(self, layers: list[LayerKVCache | None]):
        self.layers = layers

    @property
    def offset(self) -> int:
        """Number of tokens the cache holds (the position of the next token)."""
        return next((c.offset for c in self.layers if c is not None), 0)

    def trim(self, n: int) -> int:
        """Remove up to `n` of the newest tokens from every layer; returns how many were removed."""
        n = min([max(0, n)] + [c.trimmable() for c in self.layers if c is not None])
        for c in self.layers:
            if c is not None:
                c.trim(n)
        return n

    def __getitem__(self, index: int) -> LayerKVCache | None:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)
