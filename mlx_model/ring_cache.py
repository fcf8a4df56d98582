"""Sliding-window KV cache as a fixed ring of `window - 1 + slack` slots that can still roll back once wrapped.

Position p lives in slot p % capacity. Attention needs the last `window - 1` tokens before a query; the `slack`
slots beyond that keep the newest tokens' predecessors alive, so the last `slack` tokens can be removed (`trim`,
e.g. rejected speculative tokens) even after the ring has wrapped many times (mlx-lm's rotating cache cannot do
this: ml-explore/mlx-lm#1109). Slots are masked by the absolute position they hold, so their order never matters.
Updates are functional (`mx.slice_update`), so a snapshot that keeps the old arrays is never overwritten.
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlx_model.cache import attention

DEFAULT_ROLLBACK_SLACK = 256


class RingKVCache:
    """Keys and values of one sliding-window layer, [batch, kv_heads, capacity, head_dim]."""

    def __init__(self, window: int, slack: int = DEFAULT_ROLLBACK_SLACK, max_context: int | None = None):
        self.window = window
        self.slack = slack
        self.capacity = window - 1 + slack
        self.max_context = max_context
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.start = 0  # oldest position still held
        self.offset = 0  # position just past the newest token

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
        if self.max_context is not None and self.offset + new > self.max_context:
            raise ValueError(f"context of {self.offset + new} tokens exceeds max_context={self.max_context}; "
                             "start a new cache or make one with a larger max_context")
        # The first new query needs the window - 1 tokens before it: a chunk longer than the slack grows the ring.
        if self.keys is None or self.window - 1 + new > self.capacity:
            self._reallocate(max(self.capacity, self.window - 1 + new), keys, values)
        self.keys = self._write(self.keys, keys, self.offset)
        self.values = self._write(self.values, values, self.offset)
        self.offset += new
        self.start = max(self.start, self.offset - self.capacity)

    def _write(self, ring: mx.array, new: mx.array, position: int) -> mx.array:
        slot = position % self.capacity
        first = min(new.shape[2], self.capacity - slot)
        ring = mx.slice_update(ring, new[..., :first, :], mx.array([0, 0, slot, 0]), (0, 1, 2, 3))
        if first < new.shape[2]:
            ring = mx.slice_update(ring, new[..., first:, :], mx.array([0, 0, 0, 0]), (0, 1, 2, 3))
        return ring

    def _reallocate(self, capacity: int, keys: mx.array, values: mx.array) -> None:
        held = self.ordered(self.start, self.offset) if self.keys is not None and self.stored else None
        batch, heads = keys.shape[:2]
        self.capacity = capacity
        self.keys = mx.zeros((batch, heads, capacity, keys.shape[3]), keys.dtype)
        self.values = mx.zeros((batch, heads, capacity, values.shape[3]), values.dtype)
        if held is not None:
            self.keys = self._write(self.keys, held[0], self.start)
            self.values = self._write(self.values, held[1], self.start)

    def ordered(self, lo: int, hi: int) -> tuple[mx.array, mx.array]:
        """Keys and values of positions lo..hi-1 (which must be held), oldest first."""
        if not self.start <= lo <= hi <= self.offset:
            raise ValueError(f"positions {lo}..{hi} are not held (the ring holds {self.start}..{self.offset})")
        slots = mx.array(np.arange(lo, hi) % self.capacity)
        return mx.take(self.keys, slots, axis=2), mx.take(self.values, slots, axis=2)

    def attend(self, queries: mx.array, q_offset: int, scale: float = 1.0) -> mx.array:
        """Attention of queries [batch, heads, q_len, head_dim] at positions q_offset.. over the held keys:
        causal and limited to the window."""
        keys, values, mask = self.attention_inputs(q_offset, queries)
        return attention(queries, keys, values, scale, mask)

    def attention_inputs(self, q_offset: int, queries: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        """(keys, values, mask) of one fused attention call for `queries` at positions q_offset.."""
        q_len = queries.shape[2]
        if self.start == 0 and self.offset <= self.capacity:  # never wrapped: slot == position
            keys, values = self.keys[..., : self.offset, :], self.values[..., : self.offset, :]
            positions = np.arange(self.offset)
            valid = None
        else:
            keys, values = self.keys, self.values
            base = self.offset - self.capacity
            positions = base + (np.arange(self.capacity) - base) % self.capacity
            valid = positions >= self.start
        q_pos = np.arange(q_offset, q_offset + q_len)[:, None]
        mask = (positions[None, :] <= q_pos) & (positions[None, :] > q_pos - self.window)
        if valid is not None:
            mask &= valid[None, :]
        return keys, values, None if mask.all() else mx.array(mask)

    def trimmable(self) -> int:
        """How many of the newest tokens can be removed while keeping the window - 1 tokens before them."""
        if self.start == 0:
            return self.offset
        return max(0, self.stored - (self.window - 1))

    def trim(self, n: int) -> None:
        if n > self.trimmable():
            raise ValueError(f"cannot remove {n} tokens from a sliding layer that can roll back {self.trimmable()}")
        self.offset -= n

    def state(self) -> tuple:
        return (self.keys, self.values, self.start, self.offset, self.capacity)

    def set_state(self, state: tuple) -> None:
        self.keys, self.values, self.start, self.offset, self.capacity = state

    def window_before(self, position: int) -> tuple[mx.array, mx.array]:
        """Keys and values of the `window - 1` tokens before `position`: all a restored ring needs there."""
        return self.ordered(max(0, position - self.window + 1), position)

    def load_window(self, keys: mx.array, values: mx.array, position: int) -> None:
        """Start at `position` from the tokens just before it (as returned by `window_before`)."""
        self.keys = self.values = None
        self.start = self.offset = position - keys.shape[2]
        self._reallocate(max(self.capacity, keys.shape[2]), keys, values)
        self.keys = self._write(self.keys, keys, self.start)
        self.values = self._write(self.values, values, self.start)
        self.offset = position
