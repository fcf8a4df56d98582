"""`gemma-agent serve` with the small trained Gemma 4 pair, driven by the official openai and anthropic clients."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

import mlx_model

from agent.backends.mlx import MlxBackend
from agent.serve import fmt
from tests.serve_util import DRAFTER, TARGET, get_json, running_server

MODEL = "target"  # the served id: the model directory's name


@pytest.fixture(scope="module")
def server():
    with running_server("--model", str(TARGET), "--max-batch", "8") as base:
        yield base


@pytest.fixture(scope="module")
def reference():
    """In-process generation (the agent's mlx backend, one request at a time) for the same conversations."""
    backend = MlxBackend(str(TARGET))

    def generate(prompt: str, max_tokens: int) -> str:
        backend.prompts.clear()
        raw = backend.complete([{"role": "user", "content": prompt}], [], max_tokens=max_tokens,
                               on_text=lambda _: None).raw
        for stop in fmt.STOP_STRINGS:
            raw = raw.split(stop)[0]
        return raw
    return generate


def oai(base: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, **kwargs)


def claude(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def post(base: str, path: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_chat_matches_in_process_generation_streamed_and_not(server, reference):
    prompt = "def add(a, b):"
    expected = reference(prompt, 24)
    client = oai(server)
    reply = client.chat.completions.create(model=MODEL, messages=user(prompt), max_tokens=24)
    assert reply.choices[0].message.content == expected
    assert reply.usage.completion_tokens <= 24 and reply.usage.prompt_tokens > 5
    chunks = list(client.chat.completions.create(model=MODEL, messages=user(prompt), max_completion_tokens=24,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason


def test_repeated_prefix_reports_cached_tokens(server):
    tokenizer = mlx_model.load(TARGET)[1]
    client = oai(server)
    messages = user("class Stack:\n    def push(self, item):\n        self.items.append(item)\n" * 3)
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
    grown = messages + [{"role": "assistant", "content": first.choices[0].message.content},
                        {"role": "user", "content": "and pop?"}]
    third = client.chat.completions.create(model=MODEL, messages=grown, max_tokens=4)
    # The generation prompt's empty thought channel is not history (the official template drops it), so the
    # grown conversation shares the first prompt up to where that model turn opens: all of it is reused.
    shared = os.path.commonprefix([fmt.render_prompt(messages, []), fmt.render_prompt(grown, [])])
    assert 0 < first.usage.prompt_tokens - len(tokenizer.encode(shared)) < 20
    shared_tokens = len(tokenizer.encode(shared))
    assert third.usage.prompt_tokens_details.cached_tokens >= shared_tokens - 1
    message = claude(server).messages.create(model=MODEL, max_tokens=4, messages=messages)  # back to the first
    assert message.usage.cache_read_input_tokens >= shared_tokens - 1
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens == first.usage.prompt_tokens
    assert get_json(f"{server}/health")["prefix_cache_hit_rate"] > 0


def test_responses_api_streamed_and_not(server, reference):
    prompt = "import os"
    expected = reference(prompt, 16)
    client = oai(server)
    reply = client.responses.create(model=MODEL, input=prompt, max_output_tokens=16)
    assert reply.output_text == expected
    assert reply.usage.output_tokens <= 16
    with client.responses.stream(model=MODEL, input=[{"role": "user", "content": prompt}],
                                 max_output_tokens=16) as stream:
        events = list(stream)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == expected
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_anthropic_messages_streamed_and_not(server, reference):
    prompt = "for i in range(10):"
    expected = reference(prompt, 16)
    client = claude(server)
    message = client.messages.create(model=MODEL, max_tokens=16, messages=user(prompt))
    assert "".join(b.text for b in message.content if b.type == "text") == expected
    assert message.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(model=MODEL, max_tokens=16, messages=user(prompt), system="You write Python.") as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == "".join(b.text for b in final.content if b.type == "text")
    assert final.usage.output_tokens <= 16
    count = client.messages.count_tokens(model=MODEL, messages=user(prompt))
    assert count.input_tokens == message.usage.input_tokens + message.usage.cache_read_input_tokens


def test_stop_sequence_ends_the_turn_in_both_apis(server, reference):
    prompt = "def add(a, b):"
    expected = reference(prompt, 24)
    stop = expected[len(expected) // 2 : len(expected) // 2 + 2]
    assert stop.strip(), expected
    reply = oai(server).chat.completions.create(model=MODEL, messages=user(prompt), max_tokens=24, stop=[stop])
    assert reply.choices[0].message.content == expected.split(stop)[0]
    assert reply.choices[0].finish_reason == "stop"
    message = claude(server).messages.create(model=MODEL, max_tokens=24, messages=user(prompt),
                                             stop_sequences=[stop])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop


def test_legacy_completions_and_models(server):
    client = oai(server)
    assert [m.id for m in client.models.list()] == [MODEL]
    reply = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8)
    assert reply.usage.completion_tokens <= 8 and reply.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="def add(a, b):", max_tokens=8, stream=True) if c.choices)
    assert streamed == reply.choices[0].text


def test_seeded_sampling_is_reproducible(server):
    client = oai(server)
    runs = [client.chat.completions.create(model=MODEL, messages=user("x ="), max_tokens=12, temperature=1.0,
                                           top_p=0.9, seed=7).choices[0].message.content for _ in range(2)]
    assert runs[0] == runs[1]


def test_fifty_concurrent_streams_get_their_own_outputs(server, reference):
    prompts = [f"def function_{i}(value):\n    return value * {i}" for i in range(50)]
    expected = [reference(p, 12) for p in prompts]
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300)

    async def one(prompt: str) -> str:
        stream = await client.chat.completions.create(model=MODEL, messages=user(prompt), max_tokens=12,
                                                      stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def all_of_them():
        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await client.close()

    outputs = asyncio.run(all_of_them())
    assert outputs == expected
    assert len(set(outputs)) > 1


def test_disconnect_mid_stream_frees_the_slot(server):
    body = {"model": MODEL, "messages": user("Write a long story."), "max_tokens": 3000, "stream": True}
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    for _ in range(5):
        assert response.readline()
    assert get_json(f"{server}/health")["active"] == 1
    connection.sock.shutdown(2)
    connection.close()
    deadline = time.monotonic() + 10
    while get_json(f"{server}/health")["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get_json(f"{server}/health")["active"] == 0


TOO_LONG = "word " * 5000  # the fixture's context is 4096 tokens


@pytest.mark.parametrize("path,body,status,param", [
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": user("hi")}, 404, "model"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user("hi"), "temperature": 5}, 400, "temperature"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user("hi"), "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user("hi"), "n": 3}, 400, "n"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user("hi"), "stop": [1]}, 400, "stop"),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages[0].role"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "messages[0].content"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user("hi"), "tool_choice": "required"}, 400,
     "tool_choice"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user("hi"), "tools": [{"type": "function", "function": {
        "name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
    ("/v1/chat/completions", {"model": MODEL, "messages": user(TOO_LONG)}, 400, None),
    ("/v1/responses", {"model": MODEL, "input": [{"type": "input_image", "image_url": "x"}]}, 400, "input[0].type"),
    ("/v1/responses", {"model": MODEL, "input": "hi", "previous_response_id": "resp_1"}, 400,
     "previous_response_id"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
])
def test_bad_openai_requests_get_openai_errors(server, path, body, status, param):
    code, error = post(server, path, body)
    assert code == status
    assert set(error["error"]) == {"message", "type", "param", "code"} and error["error"]["message"]
    assert error["error"]["param"] == param
    assert get_json(f"{server}/health")["status"] == "ok"


@pytest.mark.parametrize("body,status", [
    ({"model": "claude-sonnet-4", "max_tokens": 5, "messages": user("hi")}, 404),
    ({"model": MODEL, "messages": user("hi")}, 400),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}, 400),
    ({"model": MODEL, "max_tokens": 5, "messages": user("hi"), "temperature": 3}, 400),
    ({"model": MODEL, "max_tokens": 5, "messages": user(TOO_LONG)}, 400),
])
def test_bad_anthropic_requests_get_anthropic_errors(server, body, status):
    code, error = post(server, "/v1/messages", body)
    assert code == status
    assert error["type"] == "error" and error["error"]["type"] in ("invalid_request_error", "not_found_error")
    if "max_tokens" in body:  # the client itself refuses a request without max_tokens
        with pytest.raises(anthropic.APIStatusError) as raised:
            claude(server).messages.create(model=body["model"], max_tokens=body["max_tokens"],
                                           messages=body["messages"], extra_body={
                                               k: v for k, v in body.items() if k not in ("model", "max_tokens",
                                                                                           "messages")})
        assert raised.value.status_code == status


def test_malformed_json_gets_each_apis_error_shape(server):
    code, error = post(server, "/v1/chat/completions", b"{not json")
    assert code == 400 and "not valid JSON" in error["error"]["message"]
    code, error = post(server, "/v1/messages", b"[1, 2")
    assert code == 400 and error["error"]["type"] == "invalid_request_error"
    code, error = post(server, "/v1/chat/completions", b"[]")
    assert code == 400
    with pytest.raises(openai.NotFoundError):
        oai(server).chat.completions.create(model="nope", messages=user("x"))
    assert get_json(f"{server}/health")["status"] == "ok"


def test_drafter_serves_the_same_greedy_tokens(reference):
    prompt = "def add(a, b):"
    with running_server("--model", str(TARGET), "--drafter", str(DRAFTER)) as base:
        reply = oai(base).chat.completions.create(model=MODEL, messages=user(prompt), max_tokens=24)
        health = get_json(f"{base}/health")
    assert reply.choices[0].message.content == reference(prompt, 24)
    assert health["drafter"] is True and health["drafter_acceptance"] > 0


def test_tool_choice_forces_a_call_of_the_named_tool(server):
    tools = [{"type": "function", "function": {"name": name, "description": "d", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}}}} for name in ("write_file", "read_file")]
    client = oai(server)
    for choice, name in (({"type": "function", "function": {"name": "read_file"}}, "read_file"),
                         ("required", "")):
        reply = client.chat.completions.create(model=MODEL, messages=user("def add(a, b):"), tools=tools,
                                               tool_choice=choice, max_tokens=12)
        message = reply.choices[0].message
        if message.tool_calls:  # the small model closed the call it was made to start
            assert reply.choices[0].finish_reason == "tool_calls"
            assert message.tool_calls[0].function.name.startswith(name)
        else:  # cut off inside the call: the unfinished call comes back as text, forced prefix first
            assert message.content.startswith(f"<|tool_call>call:{name}")
    free = client.chat.completions.create(model=MODEL, messages=user("def add(a, b):"), tools=tools,
                                          tool_choice="none", max_tokens=12)
    assert not (free.choices[0].message.content or "").startswith("<|tool_call>")
