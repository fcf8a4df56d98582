"""`MlxEngine`: Gemma 4 in-process for many concurrent requests (see `agent.serve.engine` for the design)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import mlx.core as mx

from agent.backends.mlx import MlxBackend
from agent.serve import fmt
from agent.serve.engine import Done, Engine, EngineFailure, GenRequest, Stream
from mlx_model import PromptCache, StreamingDecoder
from mlx_model.batch import BatchedCache
from mlx_model.generate import sample
from mlx_model.speculative import SpeculativeStats


@dataclass
class _Row:
    """An active request: its slot, the next token to feed, what it has fed since the prefill."""

    stream: Stream
    slot: PromptCache
    decoder: StreamingDecoder
    max_tokens: int
    prompt_tokens: int
    cached_tokens: int
    token: int = -1
    produced: int = 0
    fed: list[int] = field(default_factory=list)
    key: mx.array | None = None
    tokens: Iterator[int] | None = None  # speculative path: the slot's own token stream


class MlxEngine(Engine):
    def __init__(self, backend: MlxBackend, model_id: str, *, max_batch: int = 8):
        self.backend = backend
        self.model_id = model_id
        self.model, self.tokenizer, self.drafter = backend.model, backend.tokenizer, backend.drafter
        self.stop_ids = set(backend.stop_ids)
        store = backend.prompts  # its stored blocks are shared by every slot
        self.slots = [store] + [PromptCache(self.model, kv_bits=backend.kv_bits, store=store)
                                for _ in range(max_batch - 1)]
        self.max_context = store.max_context
        self.free = list(self.slots)
        self.rows: list[_Row] = []
        self.stats = SpeculativeStats() if self.drafter is not None else None
        self.prompt_total = self.reused_total = 0
        super().__init__()

    def count_tokens(self, text: str) -> int:
        return len(self.backend.encode_prompt(text))

    def encode(self, request: GenRequest) -> list[int]:
        if request.text is not None:
            return self.backend.encode_prompt(request.text)
        return self.backend.encode_prompt(fmt.render_prompt(request.messages, request.tools) + request.prefix)

    def health(self) -> dict[str, Any]:
        info = super().health()
        info.update(active=len(self.rows), slots=len(self.slots),
                    prefix_cache_hit_rate=round(self.reused_total / self.prompt_total, 4) if self.prompt_total else 0.0,
                    drafter=self.drafter is not None,
                    drafter_acceptance=round(self.stats.acceptance_rate, 4) if self.stats else None)
        return info

    def describe(self) -> str:
        return self.backend.describe()

    # -- the worker loop ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while self.free:
            stream = self._take(block=not self.rows)
            if stream is None:
                break
            if not stream.cancelled.is_set():
                self._admit(stream)
        for row in [r for r in self.rows if r.stream.cancelled.is_set()]:
            self._finish(row, "stop")
        if not self.rows:
            return
        if self.drafter is not None:
            for row in list(self.rows):
                self._speculative_step(row)
        else:
            self._batched_step()

    def _pick_slot(self, ids: list[int]) -> PromptCache:
        def shared(slot: PromptCache) -> int:
            n = 0
            for a, b in zip(slot.tokens, ids):
                if a != b:
                    break
                n += 1
            return n
        slot = max(self.free, key=shared)  # ties: the first, i.e. least recently freed
        self.free.remove(slot)
        return slot

    def _admit(self, stream: Stream) -> None:
        request = stream.request
        try:
            ids = self.encode(request)
        except Exception as exc:  # a tokenizer failure is this request's problem only
            stream.put(EngineFailure(400, f"cannot tokenize the prompt: {exc}"))
            return
        if len(ids) >= self.max_context:
            stream.put(EngineFailure(400, f"the prompt has {len(ids)} tokens; the context holds {self.max_context}"))
            return
        slot = self._pick_slot(ids)
        max_tokens = min(request.max_tokens, self.max_context - len(ids) + 1)
        row = _Row(stream, slot, StreamingDecoder(self.tokenizer), max_tokens, len(ids), 0)
        if request.temperature > 0:
            row.key = mx.random.key(request.seed if request.seed is not None else time.time_ns() % (1 << 62))
        self.rows.append(row)
        try:
            if self.drafter is not None:
                row.tokens = slot.stream_generate(ids, max_tokens=max_tokens, temperature=request.temperature,
                                                  top_p=request.top_p, stop_ids=self.stop_ids, seed=request.seed,
                                                  drafter=self.drafter, stats=self.stats)
                self._speculative_step(row)
                return
            logits = slot.prefill(ids)
            self._count_prompt(row)
            self._emit(row, self._sample(row, logits[None]))
        except Exception as exc:
            self._fail([row], exc)

    def _count_prompt(self, row: _Row) -> None:
        row.cached_tokens = row.slot.last_reused
        self.prompt_total += row.prompt_tokens
        self.reused_total += row.cached_tokens

    def _sample(self, row: _Row, logits: mx.array) -> int:
        request = row.stream.request
        if row.key is None:
            return int(mx.argmax(logits, axis=-1).item())
        row.key, key = mx.random.split(row.key)
        return int(sample(logits, request.temperature, request.top_p, key=key).item())

    def _batched_step(self) -> None:
        rows = list(self.rows)
        try:
            # A lone stream steps its own cache directly (the same computation without the batch bookkeeping).
            cache = rows[0].slot.cache if len(rows) == 1 else BatchedCache([r.slot.cache for r in rows])
            logits = self.model(mx.array([[r.token] for r in rows]), cache)
            logits = logits[:, -1, :]
            greedy = mx.argmax(logits, axis=-1)
            mx.eval(greedy)
            greedy = greedy.tolist()
            for i, row in enumerate(rows):
                row.fed.append(row.token)
            tokens = [greedy[i] if r.key is None else self._sample(r, logits[i : i + 1]) for i, r in enumerate(rows)]
        except Exception as exc:
            self._fail(rows, exc)
            return
        for row, token in zip(rows, tokens):
            self._emit(row, int(token))

    def _speculative_step(self, row: _Row) -> None:
        try:
            token = next(row.tokens, None)
        except Exception as exc:
            self._fail([row], exc)
            return
        if row.produced == 0 and token is not None:
            self._count_prompt(row)
        if token is None:
            self._finish(row, "length")
        else:
            self._emit(row, token)

    def _emit(self, row: _Row, token: int) -> None:
        """Deliver one sampled token: stop, text, or the end of the budget."""
        row.token = token
        if token in self.stop_ids:
            self._finish(row, "stop")
            return
        row.produced += 1
        piece = row.decoder.add(token)
        if piece:
            row.stream.put(piece)
        if row.produced >= row.max_tokens:
            self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        """End a row and free its slot, keeping its tokens for prefix reuse."""
        self.rows.remove(row)
        if row.tokens is not None:
            row.tokens.close()
        else:
            row.slot.commit(row.fed)
        self.free.append(row.slot)
        tail = row.decoder.flush()
        if tail:
            row.stream.put(tail)
        row.stream.put(Done(reason, row.prompt_tokens, row.cached_tokens, row.produced))

    def _fail(self, rows: list[_Row], exc: Exception) -> None:
        """An engine failure fails the requests in that step only; their slots start clean."""
        for row in rows:
            if row in self.rows:
                self.rows.remove(row)
            if row.tokens is not None:
                row.tokens.close()
            row.slot.reset()
            self.free.append(row.slot)
            row.stream.put(EngineFailure(500, f"generation failed: {type(exc).__name__}: {exc}"))
