"""Pieces of the server without HTTP: the turn splitter, batched decoding over separate caches, shared prefix
blocks between prompt caches."""
from __future__ import annotations

import mlx_model  # noqa: F401  (first: binds MLX to the optimized BLAS)
import mlx.core as mx
import pytest

from agent.serve.turns import Call, Text, TurnSplitter
from mlx_model import PromptCache, generate, make_cache
from mlx_model.batch import BatchedCache
from mlx_model.prefill import prefill
from tests.serve_util import TARGET

S = '<|"|>'


def split(raw: str, size: int, stop=()) -> tuple[list, TurnSplitter]:
    splitter = TurnSplitter(stop=list(stop))
    events = []
    for start in range(0, len(raw), size):
        events += splitter.feed(raw[start : start + size])
    events += splitter.finish()
    merged: list = []
    for event in events:  # adjacent text pieces are one text for comparison
        if isinstance(event, Text) and merged and isinstance(merged[-1], Text):
            merged[-1] = Text(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged, splitter


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_splitter_finds_calls_and_drops_thoughts_whatever_the_chunking(size):
    raw = (f"Look <|channel>thinking about it<channel|>here: <|tool_call>call:write{{path:{S}a<tool_call|>b{S},"
           f"n:2}}<tool_call|> and <|tool_call>call:read{{path:{S}c{S}}}<tool_call|>end<turn|>ignored")
    events, splitter = split(raw, size)
    assert events == [Text("Look here: "), Call("write", {"path": "a<tool_call|>b", "n": 2}), Text(" and "),
                      Call("read", {"path": "c"}), Text("end")]
    assert splitter.calls == 2 and splitter.stopped_by is None


@pytest.mark.parametrize("size", [1, 4, 100])
def test_splitter_stops_at_a_stop_sequence_across_chunks(size):
    events, splitter = split("alpha STOP beta", size, stop=["STOP"])
    assert events == [Text("alpha ")] and splitter.stopped_by == "STOP"


def test_splitter_keeps_malformed_and_unclosed_calls_as_text():
    events, _ = split("a<|tool_call>call:f{x:1,,}<tool_call|>b", 5)
    assert events == [Text("a<|tool_call>call:f{x:1,,}<tool_call|>b")]
    events, _ = split(f"a<|tool_call>call:f{{x:{S}open", 3)
    assert events == [Text(f"a<|tool_call>call:f{{x:{S}open")]


@pytest.fixture(scope="module")
def model():
    return mlx_model.load(TARGET)[0]


def test_batched_decoding_matches_decoding_each_sequence_alone(model):
    prompts = [[2, 10, 11, 12], [2, 40, 41, 42, 43, 44, 45, 46, 47, 48], [2, 7]]
    expected = [generate(model, p, max_tokens=20).tokens for p in prompts]
    caches = [make_cache(model) for _ in prompts]
    tokens = [int(mx.argmax(prefill(model, mx.array(p)[None], c), -1).item()) for p, c in zip(prompts, caches)]
    outputs = [[t] for t in tokens]
    for _ in range(19):
        logits = model(mx.array(tokens)[:, None], BatchedCache(caches))[:, -1, :]
        tokens = mx.argmax(logits, -1).tolist()
        for out, token in zip(outputs, tokens):
            out.append(token)
    assert outputs == expected
    assert [c.offset for c in caches] == [len(p) + 19 for p in prompts]


def test_prompt_caches_sharing_a_store_reuse_each_others_prefixes(model):
    store = PromptCache(model, page_size=16)
    other = PromptCache(model, page_size=16, store=store)
    prompt = list(range(3, 60))
    first = store.generate(prompt, max_tokens=4).tokens
    assert store.last_reused == 0
    second = other.generate(prompt + [70, 71], max_tokens=4)
    assert other.last_reused == 48  # the whole pages the first cache published
    token = int(mx.argmax(other.prefill(prompt + [70, 71, 72])).item())
    model(mx.array([[token]]), other.cache)  # fed directly, as the batched decoder does
    other.commit([token])
    assert other.tokens == prompt + [70, 71, 72, token] and other.cache.offset == len(other.tokens)
    other.reset()
    assert other.cache.offset == 0 and store.blocks
    assert first == store.generate(prompt, max_tokens=4).tokens and second.tokens
