"""Paged KV cache for full-attention layers: fixed-size pages, optionally quantized, attended chunk by chunk.

Tokens arrive in a private, unquantized *tail*. Once the tail holds a whole page and more tokens come, the page is
sealed: stored as is (kv_bits None/16: the dtype the model computes in, bf16 for the real model) or quantized
(affine, groups of 64 along head_dim, 8 or 4 bits). Sealed pages are immutable, so a prefix cache can share them
between caches without copying (copy-on-write: a cache that rolls back into a shared page takes a private copy of
it as its tail and leaves the page untouched).

Sealing happens lazily, when the next token arrives, so a token always sees the earlier tokens of its own page
unquantized, whether they came in the same prefill chunk or one decode step at a time: prefilling a page-aligned
chunk and decoding token by token give the same result even with quantized pages.

`attention_k_eq_v` layers store only V; K is rebuilt as RoPE(v * k_norm.weight) (the model's
`keys_from_values`), which halves the memory. Attention runs over chunks of pages with an online (running)
softmax, so no [queries x context] score matrix is ever built.

While the whole context fits one attention chunk (`attention_chunk` tokens, 4096 by default), attention is one
fused call over the joined keys and values, and the cache keeps that join (unquantized) for the next call: a
decode step then rebuilds the keys of its new tokens only, not of the whole context, and a reader asking again
at the same position (the MTP drafter) reuses it as is. Longer contexts keep no join, so memory stays bounded.
"""
from __future__ import annotations

from typing import Callable, Iterator

import mlx.core as mx

from mlx_model.cache import attention, attention_mask

PAGE_SIZE = 256
ATTENTION_CHUNK = 4096  # keys per attention chunk for a single query (decode)
SCORE_BUDGET = 1 << 24  # fp32 score elements per chunk (64 MiB); long query blocks get shorter key chunks
EVAL_BYTES = 48 << 20  # evaluate the running softmax once this much chunk temporaries are pending
QUANT_GROUP = 64
ALLOWED_KV_BITS = (None, 16, 8, 4)
KEY_SCALES = ("token", "channel")  # quantized keys: one scale per 64 dims of a token, or per 64 tokens of a dim

KeysFromValues = Callable[[mx.array, int], mx.array]


def check_kv_bits(kv_bits: object) -> int | None:
    """Validate `kv_bits`; returns the quantization bits, or None for unquantized (None or 16) pages."""
    valid = kv_bits is None or (type(kv_bits) is int and kv_bits in ALLOWED_KV_BITS)
    if not valid:
        raise ValueError(f"kv_bits must be one of None, 16 (unquantized pages), 8 or 4; got {kv_bits!r}")
    return None if kv_bits in (None, 16) else kv_bits


def encode(x: mx.array, bits: int | None, per_channel: bool = False):
    """Store a page tensor [..., tokens, dim]: as is, or quantized (affine, groups of 64) along dim, or with
    `per_channel` along tokens (each channel of 64 consecutive tokens shares a scale: KIVI's key layout)."""
    if bits is None:
        return x
    return tuple(mx.quantize(x.swapaxes(-1, -2) if per_channel else x, group_size=QUANT_GROUP, bits=bits))


def decode(stored, bits: int | None, per_channel: bool = False) -> mx.array:
    if bits is None:
        return stored
    data, scales, biases = stored
    x = mx.dequantize(data, scales, biases, group_size=QUANT_GROUP, bits=bits)
    return x.swapaxes(-1, -2) if per_channel else x


def stored_nbytes(stored) -> int:
    if stored is None:
        return 0
    return sum(a.nbytes for a in stored) if isinstance(stored, tuple) else stored.nbytes


class Page:
    """One sealed page of a layer: values and (unless rebuilt from values) keys, [batch, kv_heads, page, dim]."""

    __slots__ = ("keys", "values")

    def __init__(self, keys, values):
        self.keys = keys
        self.values = values

    @property
    def nbytes(self) -> int:
        return stored_nbytes(self.keys) + stored_nbytes(self.values)


class PagedKVCache:
    """Keys and values of one full-attention layer in pages; same protocol as `LayerKVCache`."""

    window = None
    start = 0

    def __init__(self, *, kv_bits: int | None = None, page_size: int = PAGE_SIZE, max_context: int | None = None,
                 keys_from_values: KeysFromValues | None = None, attention_chunk: int = ATTENTION_CHUNK,
                 key_scales: str = "token"):
        self.bits = check_kv_bits(kv_bits)
        if key_scales not in KEY_SCALES:
            raise ValueError(f"key_scales must be one of {KEY_SCALES}; got {key_scales!r}")
        self.keys_per_channel = key_scales == "channel"  # stored keys quantized per channel (values per token)
        if self.keys_per_channel and self.bits is not None and page_size % QUANT_GROUP:
            raise ValueError(f"key_scales='channel' quantizes groups of {QUANT_GROUP} tokens: page_size must be a "
                             f"multiple of {QUANT_GROUP}; got {page_size}")
        self.page_size = page_size
        self.max_context = max_context
        self.keys_from_values = keys_from_values
        self.attention_chunk = max(page_size, attention_chunk // page_size * page_size)
        self.pages: list[Page] = []
        self.tail_keys: mx.array | None = None  # stays None when keys are rebuilt from values
        self.tail_values: mx.array | None = None
        # Unquantized copy of the newest page, kept while this cache sealed it, so a short rollback across the
        # page boundary restores the exact tail instead of a dequantized one.
        self.last_raw: tuple[Page, mx.array | None, mx.array] | None = None
        self._unevaluated: list[Page] = []  # sealed since the last `arrays()`; they keep the raw tail alive
        # Keys and values [batch, kv_heads, n, dim] of positions 0..n-1 as the last fused attention call joined
        # them; the first `_joined_valid` positions still hold what the cache holds (trim, quantizing seals and
        # loads lower it).
        self._joined: tuple[mx.array, mx.array] | None = None
        self._joined_valid = 0

    # -- size -----------------------------------------------------------------------------------------------
    @property
    def tail_length(self) -> int:
        return 0 if self.tail_values is None else self.tail_values.shape[2]

    @property
    def offset(self) -> int:
        return len(self.pages) * self.page_size + self.tail_length

    @property
    def nbytes(self) -> int:
        raw = 0 if self.last_raw is None else sum(a.nbytes for a in self.last_raw[1:] if a is not None)
        tail = sum(a.nbytes for a in (self.tail_keys, self.tail_values) if a is not None)
        joined = 0 if self._joined is None else sum(a.nbytes for a in self._joined)
        return sum(p.nbytes for p in self.pages) + tail + raw + joined

    def arrays(self) -> list[mx.array]:
        """The arrays that got new data since the last call (what a caller evaluates after a prefill chunk;
        until then a lazily quantized page keeps the whole unquantized chunk it came from alive)."""
        out = [a for a in (self.tail_keys, self.tail_values) if a is not None]
        for page in self._unevaluated:
            for stored in (page.keys, page.values):
                if stored is not None:
                    out.extend(stored if isinstance(stored, tuple) else [stored])
        self._unevaluated = []
        return out

    # -- writing --------------------------------------------------------------------------------------------
    def append(self, keys: mx.array, values: mx.array) -> None:
        """Store keys/values [batch, kv_heads, new_tokens, head_dim] for the next positions."""
        new = values.shape[2]
        if self.max_context is not None and self.offset + new > self.max_context:
            raise ValueError(f"context of {self.offset + new} tokens exceeds max_context={self.max_context}; "
                             "start a new cache or make one with a larger max_context")
        self.seal()
        self.tail_values = values if self.tail_values is None else mx.concatenate([self.tail_values, values], 2)
        if self.keys_from_values is None:
            self.tail_keys = keys if self.tail_keys is None else mx.concatenate([self.tail_keys, keys], 2)

    def seal(self) -> None:
        """Seal every whole page of the tail (normally done when the next tokens arrive)."""
        size = self.page_size
        while self.tail_length >= size:
            values, rest_v = self.tail_values[..., :size, :], self.tail_values[..., size:, :]
            keys = rest_k = None
            if self.tail_keys is not None:
                keys, rest_k = self.tail_keys[..., :size, :], self.tail_keys[..., size:, :]
            page = Page(None if keys is None else encode(keys, self.bits, self.keys_per_channel),
                        encode(values, self.bits))
            self.pages.append(page)
            self._unevaluated.append(page)
            self.last_raw = None if self.bits is None else (page, keys, values)
            if self.bits is not None:  # attention now sees the quantized page, not the joined raw values
                self._joined_valid = min(self._joined_valid, (len(self.pages) - 1) * size)
            empty = rest_v.shape[2] == 0
            self.tail_values = None if empty else rest_v
            self.tail_keys = None if empty or rest_k is None else rest_k

    def load_pages(self, pages: list[Page]) -> None:
        """Start from shared sealed pages (a cached prefix); nothing is copied."""
        self.pages = list(pages)
        self.tail_keys = self.tail_values = None
        self.last_raw = None
        self._forget_joined()

    # -- rollback -------------------------------------------------------------------------------------------
    def trimmable(self) -> int:
        return self.offset

    def exact_floor(self) -> int:
        """The lowest offset `trim` reaches without dequantizing a page into the tail (page boundaries are
        always exact)."""
        if self.bits is None:
            return 0
        raw = self.last_raw is not None and self.pages and self.last_raw[0] is self.pages[-1]
        return (len(self.pages) - (1 if raw else 0)) * self.page_size

    def trim(self, n: int) -> None:
        """Remove the newest `n` tokens. Rolling back into a sealed page copies it into the tail (exact for
        the newest page this cache sealed, dequantized for older quantized pages); shared pages stay intact."""
        if n > self.offset:
            raise ValueError(f"cannot remove {n} tokens from a cache holding {self.offset}")
        self._joined_valid = min(self._joined_valid, self.offset - n)
        while n > 0:
            held = self.tail_length
            if n < held:
                self.tail_values = self.tail_values[..., : held - n, :]
                if self.tail_keys is not None:
                    self.tail_keys = self.tail_keys[..., : held - n, :]
                return
            n -= held
            self.tail_keys = self.tail_values = None
            if n == 0:
                return
            page = self.pages.pop()
            # The page's tokens come back as the raw tail this cache sealed (or decoded): re-gather them.
            self._joined_valid = min(self._joined_valid, len(self.pages) * self.page_size)
            if self.last_raw is not None and self.last_raw[0] is page:
                _, self.tail_keys, self.tail_values = self.last_raw
            else:
                self.tail_values = decode(page.values, self.bits)
                self.tail_keys = None if page.keys is None else decode(page.keys, self.bits, self.keys_per_channel)
            self.last_raw = None

    def state(self) -> tuple:
        return (list(self.pages), self.tail_keys, self.tail_values, self.last_raw)

    def set_state(self, state: tuple) -> None:
        pages, self.tail_keys, self.tail_values, self.last_raw = state
        self.pages = list(pages)
        self._forget_joined()

    def _forget_joined(self) -> None:
        self._joined, self._joined_valid = None, 0

    # -- attention ------------------------------------------------------------------------------------------
    def attend(self, queries: mx.array, q_offset: int, scale: float = 1.0) -> mx.array:
        """Causal attention of queries [batch, heads, q_len, head_dim] at positions q_offset.. over all stored
        tokens, chunk by chunk with an online softmax (one chunk: a single fused attention call)."""
        single = self.attention_inputs(q_offset, queries)
        if single is not None:
            keys, values, mask = single
            return attention(queries, keys, values, scale, mask)
        last_query = q_offset + queries.shape[2] - 1
        # A generator, not a list: each chunk's dequantized keys/values must be freed once it has been used.
        segments = (s for s in self._segments(self._chunk(queries)) if s[0] <= last_query)
        return online_softmax_attention(queries, segments, q_offset, scale)

    def attention_inputs(self, q_offset: int, queries: mx.array) -> tuple[mx.array, mx.array, mx.array | None] | None:
        """(keys, values, mask) for one fused attention call of `queries` at positions q_offset.., or None when
        the context is longer than one attention chunk (then `attend` goes chunk by chunk)."""
        chunk = self._chunk(queries)
        if self.offset > chunk:
            self._forget_joined()
            return None
        keys, values = self._join()
        return keys, values, attention_mask(q_offset, queries.shape[2], 0, keys.shape[2], None)

    def gathered_segments(self, queries: mx.array) -> list[tuple[int, mx.array, mx.array]]:
        """The (first position, keys, values) chunks `attend` would go through for `queries`, evaluated, for a
        reader that asks about one position many times (the drafter's steps in a round): rebuilding the keys
        and dequantizing once instead of once per step."""
        segments = list(self._segments(self._chunk(queries)))
        mx.eval([a for _, keys, values in segments for a in (keys, values)])
        return segments

    def _join(self) -> tuple[mx.array, mx.array]:
        """Keys and values of the whole context, reusing the previous join for the positions still valid."""
        reuse = 0 if self._joined is None else min(self._joined_valid, self._joined[1].shape[2])
        pages_end = len(self.pages) * self.page_size
        if reuse < pages_end:  # the join does not reach the tail: gather everything again
            _, keys, values = next(self._segments(self.offset))
        elif reuse == self.offset:
            keys, values = (a[..., :reuse, :] for a in self._joined)
        else:
            new_values = self.tail_values[..., reuse - pages_end :, :]
            if self.tail_keys is None:
                new_keys = self.keys_from_values(new_values, reuse)
            else:
                new_keys = self.tail_keys[..., reuse - pages_end :, :]
            keys, values = new_keys, new_values
            if reuse:
                old_keys, old_values = (a[..., :reuse, :] for a in self._joined)
                keys, values = mx.concatenate([old_keys, keys], axis=2), mx.concatenate([old_values, values], axis=2)
        self._joined, self._joined_valid = (keys, values), self.offset
        return keys, values

    def _chunk(self, queries: mx.array) -> int:
        """Keys per attention chunk: `attention_chunk` for a single query, fewer for long query blocks."""
        budget = SCORE_BUDGET // max(1, queries.shape[1] * queries.shape[2])
        return max(self.page_size, min(self.attention_chunk, budget // self.page_size * self.page_size))

    def _segments(self, chunk: int) -> Iterator[tuple[int, mx.array, mx.array]]:
        """(first position, keys, values) of consecutive chunks of at most `chunk` tokens (whole pages, the tail
        joining the last group of pages when it fits), oldest first."""
        per_chunk = max(1, chunk // self.page_size)
        tail_joined = False
        for first in range(0, len(self.pages), per_chunk):
            group = self.pages[first : first + per_chunk]
            values = [decode(p.values, self.bits) for p in group]
            keys = None if group[0].keys is None else [decode(p.keys, self.bits, self.keys_per_channel)
                                                        for p in group]
            last_group = first + per_chunk >= len(self.pages)
            if last_group and self.tail_length and len(group) * self.page_size + self.tail_length <= chunk:
                tail_joined = True
                values.append(self.tail_values)
                if keys is not None:
                    keys.append(self.tail_keys)
            yield self._with_keys(first * self.page_size, None if keys is None else _concat(keys), _concat(values))
        if tail_joined:
            return
        base = len(self.pages) * self.page_size
        for lo in range(0, self.tail_length, chunk):
            values = self.tail_values[..., lo : lo + chunk, :]
            keys = None if self.tail_keys is None else self.tail_keys[..., lo : lo + chunk, :]
            yield self._with_keys(base + lo, keys, values)

    def _with_keys(self, start: int, keys: mx.array | None, values: mx.array):
        if keys is None:
            keys = self.keys_from_values(values, start)
        return start, keys, values


def _concat(arrays: list[mx.array]) -> mx.array:
    return arrays[0] if len(arrays) == 1 else mx.concatenate(arrays, axis=2)


def online_softmax_attention(queries: mx.array, segments: Iterator[tuple[int, mx.array, mx.array]],
                             q_offset: int, scale: float) -> mx.array:
    """Exact causal softmax attention accumulated over key chunks (running max, sum and weighted values).

    The first chunk must start at position 0: every query sees key 0, so the running max is finite from then on
    and later fully-masked rows contribute exp(-inf) = 0.
    """
    batch, heads, q_len, _ = queries.shape
    q_pos = mx.arange(q_offset, q_offset + q_len)[:, None]
    running_max = total = out = None
    pending = 0
    for start, keys, values in segments:
        kv_heads, n = keys.shape[1], keys.shape[2]
        if out is None:
            q = (queries.astype(mx.float32) * scale).reshape(batch, kv_heads, heads // kv_heads, q_len, -1)
        k = keys.astype(mx.float32)[:, :, None]
        v = values.astype(mx.float32)[:, :, None]
        scores = q @ k.swapaxes(-1, -2)  # [batch, kv_heads, group, q_len, n]
        if start + n - 1 > q_offset:
            scores = mx.where(mx.arange(start, start + n)[None, :] <= q_pos, scores, -mx.inf)
        chunk_max = scores.max(axis=-1, keepdims=True)
        new_max = chunk_max if running_max is None else mx.maximum(running_max, chunk_max)
        weights = mx.exp(scores - new_max)
        if out is None:
            total, out = weights.sum(axis=-1, keepdims=True), weights @ v
        else:
            correction = mx.exp(running_max - new_max)
            total = total * correction + weights.sum(axis=-1, keepdims=True)
            out = out * correction + weights @ v
        running_max = new_max
        # Bound memory: MLX would otherwise keep every chunk's scores and dequantized K/V until the end.
        pending += 4 * (2 * scores.size + k.size + v.size)
        if pending >= EVAL_BYTES:
            mx.eval(running_max, total, out)
            pending = 0
    out = (out / total).reshape(batch, heads, q_len, -1)
    return out.astype(queries.dtype)
