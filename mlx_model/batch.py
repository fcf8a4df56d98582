"""Batched decoding of independent sequences: one forward pass for several caches at different positions.

`BatchedCache` presents the caches of B separate sequences (each a `ModelCache` from `make_cache`, at its own
offset) as one cache for `model(ids [B, 1], cache)`. The projections, MLP and head run once for the batch
(what makes aggregate throughput grow with the number of streams); RoPE takes the per-row offsets as an
array, and each row appends to and attends over its own layer cache. The row caches are left exactly as if
each sequence had been decoded alone, so they can be reused (prefix caching) afterwards.

    logits = model(mx.array([[a], [b]]), BatchedCache([cache_a, cache_b]))[:, -1, :]
"""
from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from mlx_model.cache import ModelCache


class _RowLayers:
    """One layer's caches across the batch: appends split by row, attention computed per row."""

    def __init__(self, rows: list, positions: list[int]):
        self.rows = rows
        self.positions = positions

    def append(self, keys: mx.array, values: mx.array) -> None:
        for i, row in enumerate(self.rows):
            row.append(keys[i : i + 1], values[i : i + 1])

    def attend(self, queries: mx.array, q_offset, scale: float = 1.0) -> mx.array:
        return mx.concatenate([row.attend(queries[i : i + 1], self.positions[i], scale)
                               for i, row in enumerate(self.rows)], axis=0)


class BatchedCache:
    """The caches of several sequences seen as one batch cache (rows in the order given)."""

    def __init__(self, caches: Sequence[ModelCache]):
        if not caches:
            raise ValueError("BatchedCache needs at least one cache")
        sizes = {len(c) for c in caches}
        if len(sizes) != 1:
            raise ValueError("the caches belong to models with different numbers of layers")
        self.caches = list(caches)
        self.positions = [c.offset for c in self.caches]
        for c, position in zip(self.caches, self.positions):
            if c.max_context is not None and position + 1 > c.max_context:
                raise ValueError(f"a row's cache is full ({position} tokens, max_context={c.max_context})")
        self.layers = [None if caches[0][i] is None else _RowLayers([c[i] for c in self.caches], self.positions)
                       for i in range(sizes.pop())]

    @property
    def offset(self) -> mx.array:
        """Per-row positions of the tokens being fed (RoPE accepts an offset per batch row)."""
        return mx.array(self.positions)

    def arrays(self) -> list[mx.array]:
        return [a for c in self.caches for a in c.arrays()]

    def __getitem__(self, index: int):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)
