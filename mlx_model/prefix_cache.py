"""Prompt-prefix reuse across generations: each call pays only for the tokens its cache does not already hold.

`PromptCache` keeps one live paged cache and a store of earlier work:

- Live reuse: a new prompt that extends what the live cache holds (an agent's next turn: the previous prompt,
  the model's reply, then new messages) keeps the live cache; if it diverges in the newest tokens, those are
  rolled back (`trim`, up to the sliding layers' slack) and the rest is prefilled.
- Stored reuse: sealed pages are published as page-aligned token blocks, hashed by (parent hash, tokens) and
  ref-counted, together with a checkpoint of the sliding layers' windows at the newest page boundary. A prompt
  that shares a longer prefix with stored blocks than with the live cache starts a new live cache from them:
  the full layers take the stored pages as they are (pages are immutable, so nothing is copied; rolling back
  into one copies it, copy-on-write) and the sliding layers are restored from the checkpoint.
- Blocks no cache uses and checkpoints are evicted least-recently-used first while the total (live cache
  included) is over `memory_budget`.
- `save` / `load` write and read the live cache with its tokens, so a resumed session does not re-prefill.

    cache = PromptCache(model, kv_bits=4)
    for token in cache.stream_generate(prompt_ids, max_tokens=256, stop_ids=eos): ...
    cache.last_reused, cache.last_prefilled  # tokens served from cache / computed for that call
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from mlx_model.gemma4 import Model
from mlx_model.generate import GenerationResult, collect, make_cache, prefill, stream_generate
from mlx_model.paged_cache import PAGE_SIZE, Page, PagedKVCache, check_kv_bits
from mlx_model.ring_cache import RingKVCache

DEFAULT_MEMORY_BUDGET = 3 << 30  # live cache (about 1 GiB at 256K, 4-bit) + stored blocks and checkpoints
SAVE_FORMAT = "gemma-agent-kv-cache/1"


def block_hashes(tokens: Sequence[int], page_size: int) -> list[bytes]:
    """Chained hash of every whole page of `tokens`: hash i covers tokens[: (i + 1) * page_size]."""
    hashes, parent = [], b""
    array = np.asarray(tokens, dtype=np.int64)
    for start in range(0, len(array) - page_size + 1, page_size):
        parent = hashlib.blake2b(parent + array[start : start + page_size].tobytes(), digest_size=16).digest()
        hashes.append(parent)
    return hashes


@dataclass
class Block:
    """One page of tokens in every full-attention layer (layer index -> sealed page)."""

    pages: dict[int, Page]
    parent: bytes | None
    children: int = 0  # stored blocks that extend this one
    holders: int = 0  # live caches using this block

    @property
    def evictable(self) -> bool:
        return self.children == 0 and self.holders == 0


@dataclass
class Checkpoint:
    """The sliding layers' last window - 1 tokens before a page boundary (layer index -> keys, values)."""

    windows: dict[int, tuple[mx.array, mx.array]]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.windows.values())


class PromptCache:
    """A reusable KV cache for a sequence of prompts that share prefixes (see the module docstring)."""

    def __init__(self, model: Model, kv_bits: int | None = None, max_context: int | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, page_size: int = PAGE_SIZE,
                 store: "PromptCache | None" = None):
        """`store`: share that cache's stored blocks and checkpoints (several live caches, e.g. one per
        concurrent request of a server, then reuse each other's prefixes)."""
        check_kv_bits(kv_bits)
        if type(memory_budget) is not int or memory_budget <= 0:
            raise ValueError(f"memory_budget must be a positive number of bytes; got {memory_budget!r}")
        self.model = model
        self.kv_bits = kv_bits
        self.page_size = page_size
        self.memory_budget = memory_budget
        self._options = dict(kv_bits=kv_bits, max_context=max_context, page_size=page_size)
        self.cache = make_cache(model, **self._options)  # validates kv_bits, max_context and page_size
        self.max_context = self.cache.max_context
        self.tokens: list[int] = []  # what the live cache holds
        self._held: list[bytes] = []  # hashes of the stored blocks the live cache's pages are
        self.blocks: dict[bytes, Block] = {} if store is None else store.blocks
        self.checkpoints: dict[bytes, Checkpoint] = {} if store is None else store.checkpoints
        self._lru: OrderedDict[tuple[str, bytes], None] = OrderedDict() if store is None else store._lru
        self.last_reused = 0
        self.last_prefilled = 0

    # -- public API -----------------------------------------------------------------------------------------
    def prefill(self, prompt_ids: Sequence[int]) -> mx.array:
        """Bring the live cache to hold `prompt_ids`, reusing what it can; returns the last position's logits
        [vocab] (what the next token is sampled from)."""
        prompt = self._check_prompt(prompt_ids)
        reused = self._reuse(prompt)
        logits = prefill(self.model, mx.array(prompt[reused:]).reshape(1, -1), self.cache)[0]
        self.tokens = list(prompt)
        self._after_call()
        return logits

    def stream_generate(self, prompt_ids: Sequence[int], *, max_tokens: int, temperature: float = 0.0,
                        top_p: float = 1.0, stop_ids: Iterable[int] = (), seed: int | None = None,
                        drafter=None, draft_length: int | None = None, stats=None) -> Iterator[int]:
        """Like `mlx_model.stream_generate` for the whole prompt, prefilling only what is not cached (with
        `drafter`, decoding is speculative; its rollbacks stay within the cache's rollback slack)."""
        prompt = self._check_prompt(prompt_ids)
        reused = self._reuse(prompt)
        produced: list[int] = []
        try:
            for token in stream_generate(self.model, prompt[reused:], max_tokens=max_tokens,
                                         temperature=temperature, top_p=top_p, stop_ids=stop_ids,
                                         cache=self.cache, seed=seed, drafter=drafter,
                                         draft_length=draft_length, stats=stats):
                produced.append(token)
                yield token
        finally:
            self.tokens = (list(prompt) + produced)[: self.cache.offset]
            self._after_call()

    def commit(self, fed: Sequence[int]) -> None:
        """Record tokens the caller fed to `self.cache` directly after `prefill` (e.g. batched decoding steps
        through `mlx_model.batch.BatchedCache`), so later prompts can reuse them; publishes whole pages."""
        self.tokens = (self.tokens + [int(t) for t in fed])[: self.cache.offset]
        self._after_call()

    def reset(self) -> None:
        """Drop the live cache (after a failed step left it in an unknown state); stored blocks stay."""
        self._release()
        self.cache, self.tokens = make_cache(self.model, **self._options), []

    def generate(self, prompt_ids: Sequence[int], max_tokens: int = 256, temperature: float = 0.0, *,
                 top_p: float = 1.0, stop_ids: Iterable[int] = (), seed: int | None = None,
                 on_token=None) -> GenerationResult:
        """Like `mlx_model.generate`; `.reused_tokens` says how much of the prompt came from the cache and
        `.prompt_seconds` is the time to the first token, prefix lookup included."""
        stops = set(stop_ids)
        result = collect(lambda: self.stream_generate(prompt_ids, max_tokens=max_tokens, temperature=temperature,
                                                      top_p=top_p, stop_ids=stops, seed=seed),
                         GenerationResult(prompt_tokens=len(prompt_ids)), stops, on_token)
        result.reused_tokens = self.last_reused
        return result

    @property
    def nbytes(self) -> int:
        """Bytes held: the live cache plus stored blocks and checkpoints (shared pages counted once)."""
        seen: set[int] = set()
        total = 0
        for layer in self.cache.layers:
            if isinstance(layer, PagedKVCache):
                seen.update(id(p) for p in layer.pages)
            if layer is not None:
                total += layer.nbytes
        for block in self.blocks.values():
            for page in block.pages.values():
                if id(page) not in seen:
                    seen.add(id(page))
                    total += page.nbytes
        return total + sum(c.nbytes for c in self.checkpoints.values())

    def clear(self) -> None:
        """Drop everything: the live cache and all stored blocks."""
        self.cache = make_cache(self.model, **self._options)
        self.tokens, self._held = [], []
        self.blocks.clear()
        self.checkpoints.clear()
        self._lru.clear()

    # -- reuse ----------------------------------------------------------------------------------------------
    def _check_prompt(self, prompt_ids: Sequence[int]) -> list[int]:
        prompt = [int(t) for t in (prompt_ids.tolist() if isinstance(prompt_ids, mx.array) else prompt_ids)]
        if not prompt:
            raise ValueError("prompt_ids is empty: give at least one token")
        if len(prompt) > self.max_context:
            raise ValueError(f"prompt of {len(prompt)} tokens exceeds max_context={self.max_context}; shorten it "
                             "(or make the PromptCache with a larger max_context)")
        return prompt

    def _reuse(self, prompt: list[int]) -> int:
        """Make the live cache hold the longest reusable prefix of `prompt` (leaving at least one token to
        feed); returns its length."""
        self._sync()
        usable = len(prompt) - 1
        common = 0
        for a, b in zip(self.tokens[:usable], prompt):
            if a != b:
                break
            common += 1
        floor = max([c.exact_floor() for c in self.cache.layers if isinstance(c, PagedKVCache)] + [0])
        if common < floor:  # rolling back to a page boundary keeps quantized pages exactly as a cold prefill
            common = common // self.page_size * self.page_size
        live = common if self.cache.offset - common <= self._trimmable() else 0
        hashes = block_hashes(prompt[:usable], self.page_size)
        matched = 0
        while matched < len(hashes) and hashes[matched] in self.blocks:
            matched += 1
        stored = next((n for n in range(matched, 0, -1) if hashes[n - 1] in self.checkpoints), 0)
        if live >= stored * self.page_size and (live or not stored):
            self._trim_live(self.cache.offset - live)
            reused = live
        else:
            self._start_from_store(hashes[:stored])
            reused = stored * self.page_size
        self.tokens = prompt[:reused]
        self.last_reused, self.last_prefilled = reused, len(prompt) - reused
        return reused

    def _sync(self) -> None:
        """Follow changes made to `self.cache` directly (e.g. a speculative decoder's `trim`); a cache fed
        tokens we were not told about cannot be matched and starts over."""
        if self.cache.offset > len(self.tokens):
            self._release()
            self.cache, self.tokens = make_cache(self.model, **self._options), []
        self.tokens = self.tokens[: self.cache.offset]
        self._drop_unheld_pages()

    def _drop_unheld_pages(self) -> None:
        pages = self._page_count()
        while len(self._held) > pages:
            self.blocks[self._held.pop()].holders -= 1

    def _trimmable(self) -> int:
        return min([c.trimmable() for c in self.cache.layers if c is not None] + [self.cache.offset])

    def _trim_live(self, n: int) -> None:
        if self.cache.offset - n == 0:  # nothing kept: a fresh cache is cheaper than rolling back
            self._release()
            self.cache = make_cache(self.model, **self._options)
            return
        self.cache.trim(n)
        self._drop_unheld_pages()

    def _start_from_store(self, chain: list[bytes]) -> None:
        self._publish()
        self._release()
        cache = make_cache(self.model, **self._options)
        boundary = len(chain) * self.page_size
        checkpoint = self.checkpoints[chain[-1]]
        for index, layer in enumerate(cache.layers):
            if isinstance(layer, PagedKVCache):
                layer.load_pages([self.blocks[h].pages[index] for h in chain])
            elif isinstance(layer, RingKVCache):
                layer.load_window(*checkpoint.windows[index], boundary)
        for h in chain:
            self.blocks[h].holders += 1
            self._touch("block", h)
        self._touch("checkpoint", chain[-1])
        self.cache, self._held = cache, list(chain)

    def _release(self) -> None:
        for h in self._held:
            self.blocks[h].holders -= 1
        self._held = []

    def _page_count(self) -> int:
        return next((len(c.pages) for c in self.cache.layers if isinstance(c, PagedKVCache)),
                    self.cache.offset // self.page_size)

    # -- publishing and eviction ----------------------------------------------------------------------------
    def _after_call(self) -> None:
        self._publish()
        self._evict()

    def _publish(self) -> None:
        """Store the live cache's whole pages as blocks and checkpoint its sliding layers at the newest page
        boundary (sealing a full tail early stores the same page it would get on the next token)."""
        for layer in self.cache.layers:
            if isinstance(layer, PagedKVCache):
                layer.seal()
        pages = self._page_count()
        hashes = block_hashes(self.tokens[: pages * self.page_size], self.page_size)
        for i in range(len(self._held), pages):
            h = hashes[i]
            block = self.blocks.get(h)
            if block is None:
                parent = hashes[i - 1] if i else None
                block = Block({j: c.pages[i] for j, c in enumerate(self.cache.layers)
                               if isinstance(c, PagedKVCache)}, parent)
                self.blocks[h] = block
                if parent is not None:
                    self.blocks[parent].children += 1
            block.holders += 1
            self._held.append(h)
            self._touch("block", h)
        if not pages or hashes[pages - 1] in self.checkpoints:
            return
        boundary = pages * self.page_size
        rings = {j: c for j, c in enumerate(self.cache.layers) if isinstance(c, RingKVCache)}
        if all(c.start <= max(0, boundary - c.window + 1) for c in rings.values()):
            windows = {j: c.window_before(boundary) for j, c in rings.items()}
            mx.eval([a for pair in windows.values() for a in pair])
            self.checkpoints[hashes[pages - 1]] = Checkpoint(windows)
            self._touch("checkpoint", hashes[pages - 1])

    def _touch(self, kind: str, h: bytes) -> None:
        self._lru[(kind, h)] = None
        self._lru.move_to_end((kind, h))

    def _evict(self) -> None:
        """Drop least-recently-used checkpoints and unused leaf blocks while over the memory budget."""
        total = self.nbytes
        while total > self.memory_budget:
            victim = next((key for key in self._lru if key[0] == "checkpoint"
                           or self.blocks[key[1]].evictable), None)
            if victim is None:
                return
            kind, h = victim
            del self._lru[victim]
            if kind == "checkpoint":
                total -= self.checkpoints.pop(h).nbytes
                continue
            block = self.blocks.pop(h)
            total -= sum(p.nbytes for p in block.pages.values())
            if block.parent is not None:
                self.blocks[block.parent].children -= 1
            if h in self.checkpoints:
                total -= self.checkpoints.pop(h).nbytes
                self._lru.pop(("checkpoint", h), None)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the live cache and its tokens to a safetensors file (atomically: a failed save leaves any
        earlier file at `path` intact)."""
        path = Path(path)
        self._publish()
        arrays: dict[str, mx.array] = {"tokens": mx.array(np.asarray(self.tokens, dtype=np.int32))}
        for index, layer in enumerate(self.cache.layers):
            if isinstance(layer, PagedKVCache):
                _save_paged(arrays, f"layer{index}", layer)
            elif isinstance(layer, RingKVCache) and layer.offset:
                arrays[f"layer{index}.ring.keys"], arrays[f"layer{index}.ring.values"] = layer.ordered(
                    layer.start, layer.offset)
        metadata = {"format": SAVE_FORMAT, "model": self._fingerprint(), "offset": str(self.cache.offset)}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.safetensors")
        try:
            mx.save_safetensors(str(tmp), arrays, metadata=metadata)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, path: str | Path) -> None:
        """Replace the live cache with one saved by `save` for the same model and cache settings."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no saved KV cache there")
        try:
            arrays, metadata = mx.load(str(path), format="safetensors", return_metadata=True)
        except Exception as exc:  # mlx raises RuntimeError/ValueError for unreadable files
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
        if metadata.get("format") != SAVE_FORMAT:
            raise ValueError(f"{path} is not a KV cache saved by PromptCache.save (format {metadata.get('format')!r})")
        if metadata.get("model") != self._fingerprint():
            raise ValueError(f"{path} was saved for a different model or different cache settings (kv_bits, "
                             "page_size); it cannot be used with this one")
        cache = make_cache(self.model, **self._options)
        offset = int(metadata["offset"])
        for index, layer in enumerate(cache.layers):
            if isinstance(layer, PagedKVCache):
                _load_paged(arrays, f"layer{index}", layer)
            elif isinstance(layer, RingKVCache) and offset:
                layer.load_window(arrays[f"layer{index}.ring.keys"], arrays[f"layer{index}.ring.values"], offset)
        if cache.offset != offset:
            raise ValueError(f"{path} is inconsistent: it holds {cache.offset} tokens, its header says {offset}")
        self._release()
        self.cache, self.tokens = cache, [int(t) for t in arrays["tokens"].tolist()]
        self._after_call()

    def _fingerprint(self) -> str:
        """Identifies the model (shapes and a sample of weights) and cache settings a saved cache belongs to."""
        config = self.model.config
        embed = self.model.model.embed_tokens.weight[:4].astype(mx.float32)
        sample = hashlib.blake2b(np.array(embed).tobytes(), digest_size=8).hexdigest()
        return json.dumps({"layers": [list(vars(s).values()) for s in config.layers], "vocab": config.vocab_size,
                           "hidden": config.hidden_size, "window": config.sliding_window, "weights": sample,
                           "kv_bits": check_kv_bits(self.kv_bits), "page_size": self.page_size})


def _save_paged(arrays: dict[str, mx.array], prefix: str, layer: PagedKVCache) -> None:
    """Pages of a layer concatenated along the token axis (per stored component), plus the tail."""
    for name in ("keys", "values"):
        stored = [getattr(p, name) for p in layer.pages]
        if stored and stored[0] is not None:
            parts = zip(*stored) if isinstance(stored[0], tuple) else [stored]
            for part, component in zip(parts, ("data", "scales", "biases")):
                arrays[f"{prefix}.pages.{name}.{component}"] = mx.concatenate(list(part), axis=2)
        tail = getattr(layer, f"tail_{name}")
        if tail is not None:
            arrays[f"{prefix}.tail.{name}"] = tail


def _load_paged(arrays: dict[str, mx.array], prefix: str, layer: PagedKVCache) -> None:
    size = layer.page_size
    stored = {}
    for name in ("keys", "values"):
        parts = [arrays.get(f"{prefix}.pages.{name}.{c}") for c in ("data", "scales", "biases")]
        stored[name] = [p for p in parts if p is not None]
    count = stored["values"][0].shape[2] // size if stored["values"] else 0

    def page_part(name: str, i: int):
        parts = [p[..., i * size : (i + 1) * size, :] for p in stored[name]]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else tuple(parts)

    layer.load_pages([Page(page_part("keys", i), page_part("values", i)) for i in range(count)])
    layer.tail_keys = arrays.get(f"{prefix}.tail.keys")
    layer.tail_values = arrays.get(f"{prefix}.tail.values")
