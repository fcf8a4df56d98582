"""Token generation: chunked prefill, then one token at a time, greedy or sampled."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import mlx.core as mx

from mlx_model.assistant import Drafter
from mlx_model.cache import ModelCache
from mlx_model.compiled_step import hidden_states
from mlx_model.gemma4 import Model
from mlx_model.prefill import prefill, tokens_that_fit
from mlx_model.speculative import MAX_DRAFT, SpeculativeStats, speculative_stream


def make_cache(model: Model, kv_bits: int | None = None, max_context: int | None = None, **options) -> ModelCache:
    """A fresh paged KV cache for `model` (pass it to `model(ids, cache=...)` or to `stream_generate`).

    kv_bits: None or 16 keep pages in the model's dtype (bf16 for the real model); 8 or 4 quantize sealed pages
    (affine, groups of 64 along head_dim; the newest, unfilled page stays unquantized). max_context: the most
    tokens the cache may hold (default and upper bound: the model's max_position_embeddings). Anything else
    raises ValueError naming the allowed values. `options` (page_size, attention_chunk, rollback_slack, paged)
    go to `Model.make_cache`.
    """
    return model.make_cache(kv_bits=kv_bits, max_context=max_context, **options)


def sample(logits: mx.array, temperature: float, top_p: float = 1.0, key: mx.array | None = None) -> mx.array:
    """Pick the next token from logits [batch, vocab]: argmax at temperature 0, else sample (nucleus if top_p<1);
    `key` (from `mx.random.key`) makes the draw independent of the global random state."""
    if temperature <= 0:
        return mx.argmax(logits, axis=-1)
    logits = logits.astype(mx.float32) / temperature
    if top_p < 1.0:
        order = mx.argsort(-logits, axis=-1)
        sorted_logits = mx.take_along_axis(logits, order, axis=-1)
        probs = mx.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        keep = (mx.cumsum(probs, axis=-1) - probs) < top_p
        sorted_logits = mx.where(keep, sorted_logits, -mx.inf)
        choice = mx.random.categorical(sorted_logits, axis=-1, key=key)
        return mx.take_along_axis(order, choice[..., None], axis=-1)[..., 0]
    return mx.random.categorical(logits, axis=-1, key=key)


def stream_generate(model: Model, prompt_ids: Sequence[int] | mx.array, *, max_tokens: int,
                    temperature: float = 0.0, top_p: float = 1.0, stop_ids: Iterable[int] = (),
                    cache: ModelCache | None = None, seed: int | None = None, drafter: Drafter | None = None,
                    draft_length: int | None = None, stats: SpeculativeStats | None = None) -> Iterator[int]:
    """Yield generated token ids one at a time (batch of one).

    With `cache`, generation continues from it: pass only the tokens not already in the cache. Afterwards the
    cache holds everything that was fed: the prompt and every yielded token but the last.
    A stop id is yielded and ends generation; so does reaching the cache's max_context (a prompt that does not
    fit raises ValueError before anything is computed). With `drafter`, tokens come from speculative decoding
    (`draft_length` None = adaptive); `stats` then collects its statistics.
    """
    ids = mx.array(prompt_ids).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("prompt_ids is empty: give at least one token")
    if max_tokens <= 0:
        return
    if seed is not None:
        mx.random.seed(seed)
    if cache is None:  # speculative decoding rolls back at most MAX_DRAFT + 1 tokens: smaller sliding rings
        cache = make_cache(model, **({"rollback_slack": MAX_DRAFT + 1} if drafter is not None else {}))
    max_tokens = tokens_that_fit(cache, ids.shape[1], max_tokens)  # stop at max_context, not fail mid-way
    if drafter is not None:
        yield from speculative_stream(model, drafter, ids, cache, max_tokens=max_tokens, temperature=temperature,
                                      top_p=top_p, stop_ids=stop_ids, draft_length=draft_length, stats=stats)
        return
    stops = set(stop_ids)
    logits = prefill(model, ids, cache)
    for step in range(max_tokens):
        token = sample(logits, temperature, top_p)
        mx.eval(token)
        token_id = int(token.item())
        yield token_id
        if token_id in stops or step == max_tokens - 1:
            return
        logits = model.logits(hidden_states(model, token.reshape(1, 1), cache))[:, -1, :]


@dataclass
class GenerationResult:
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    peak_memory_bytes: int = 0
    finish_reason: str = "length"  # "length" or "stop"
    speculative: SpeculativeStats | None = None  # drafting statistics when a drafter was used
    reused_tokens: int = 0  # prompt tokens served from a prefix cache (see `PromptCache`)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def generation_tps(self) -> float:
        """Tokens per second after the first token (the first one is paid by the prompt)."""
        decoded = len(self.tokens) - 1
        return decoded / self.generation_seconds if decoded > 0 and self.generation_seconds else 0.0


def generate(model: Model, prompt_ids: Sequence[int] | mx.array, max_tokens: int = 256, temperature: float = 0.0,
             *, top_p: float = 1.0, stop_ids: Iterable[int] = (), cache: ModelCache | None = None,
             seed: int | None = None, on_token=None, drafter: Drafter | None = None,
             draft_length: int | None = None) -> GenerationResult:
    """Generate up to `max_tokens` tokens; `.tokens` holds them (greedy at temperature 0).

    `on_token(token_id)` is called as each token arrives (for streaming output). With `drafter` (an MTP
    assistant from `load_drafter`), decoding is speculative and `.speculative` holds its statistics.
    """
    result = GenerationResult(prompt_tokens=mx.array(prompt_ids).size,
                              speculative=SpeculativeStats() if drafter is not None else None)
    stops = set(stop_ids)
    return collect(lambda: stream_generate(model, prompt_ids, max_tokens=max_tokens, temperature=temperature,
                                           top_p=top_p, stop_ids=stops, cache=cache, seed=seed, drafter=drafter,
                                           draft_length=draft_length, stats=result.speculative),
                   result, stops, on_token)


def collect(start_stream, result: GenerationResult, stops: set[int], on_token=None) -> GenerationResult:
    """Run a token stream (started by `start_stream()`) into `result`, timing the first token (prompt) and the
    rest (generation) and recording the peak memory."""
    mx.reset_peak_memory()
    start = time.perf_counter()
    first_at = None
    for token in start_stream():
        if first_at is None:
            first_at = time.perf_counter()
        result.tokens.append(token)
        if on_token is not None:
            on_token(token)
        if token in stops:
            result.finish_reason = "stop"
    end = time.perf_counter()
    if first_at is not None:
        result.prompt_seconds = first_at - start
        result.generation_seconds = end - first_at
    result.peak_memory_bytes = mx.get_peak_memory()
    return result
