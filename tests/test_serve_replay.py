"""`gemma-agent serve --backend replay`: scripted native outputs come back as each API's structured tool calls;
API keys, bind safety, engine failures, and the agent's own openai backend running `fix` through the server."""
from __future__ import annotations

import json

import anthropic
import openai
import pytest

from agent.cli import main
from tests.fixtures.agent.sample_repo import make_sample_repo
from tests.serve_util import get_json, running_server, write_transcript

S = '<|"|>'
WRITE = (f"I will write it.<|tool_call>call:write_file{{content:{S}print(1){S},path:{S}a.py{S}}}<tool_call|>"
         f"<|tool_call>call:read_file{{path:{S}b.py{S}}}<tool_call|>")
TOOLS_OPENAI = [{"type": "function", "function": {"name": n, "description": n, "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}}}}
    for n in ("write_file", "read_file")]
EXPECTED_CALLS = [("write_file", {"content": "print(1)", "path": "a.py"}), ("read_file", {"path": "b.py"})]


@pytest.fixture
def replay(tmp_path):
    def start(outputs, *args, env=None):
        return running_server("--replay", write_transcript(tmp_path / "t.jsonl", outputs), *args, env=env)
    return start


def test_openai_chat_tool_calls_streamed_and_not(replay):
    with replay([WRITE, WRITE, "All done."]) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="replay", messages=[{"role": "user", "content": "go"}],
                                               tools=TOOLS_OPENAI)
        message = reply.choices[0].message
        assert reply.choices[0].finish_reason == "tool_calls" and message.content == "I will write it."
        assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == EXPECTED_CALLS
        calls: dict[int, dict] = {}
        text = ""
        for chunk in client.chat.completions.create(model="replay", messages=[{"role": "user", "content": "go"}],
                                                    tools=TOOLS_OPENAI, stream=True):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for part in choice.delta.tool_calls or []:
                    slot = calls.setdefault(part.index, {"name": "", "arguments": ""})
                    slot["name"] += part.function.name or ""
                    slot["arguments"] += part.function.arguments or ""
        assert text == "I will write it."
        assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == EXPECTED_CALLS
        history = [{"role": "user", "content": "go"}, message.model_dump(exclude_none=True)] + [
            {"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in message.tool_calls]
        final = client.chat.completions.create(model="replay", messages=history, tools=TOOLS_OPENAI)
        assert final.choices[0].message.content == "All done." and final.choices[0].finish_reason == "stop"


def test_responses_function_calls_streamed_and_not(replay):
    tools = [{"type": "function", **t["function"]} for t in TOOLS_OPENAI]
    with replay([WRITE, WRITE, "Done."]) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.responses.create(model="replay", input="go", tools=tools)
        calls = [o for o in reply.output if o.type == "function_call"]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == EXPECTED_CALLS
        assert reply.output_text == "I will write it."
        with client.responses.stream(model="replay", input="go", tools=tools) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        assert [(o.name, json.loads(o.arguments)) for o in final.output if o.type == "function_call"] == \
            EXPECTED_CALLS
        follow = [{"role": "user", "content": "go"}, *[c.model_dump(exclude_none=True) for c in calls],
                  *[{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls]]
        assert client.responses.create(model="replay", input=follow, tools=tools).output_text == "Done."


def test_anthropic_tool_use_streamed_and_not(replay):
    tools = [{"name": t["function"]["name"], "description": "d", "input_schema": t["function"]["parameters"]}
             for t in TOOLS_OPENAI]
    with replay([WRITE, WRITE, "Done."]) as base:
        client = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
        message = client.messages.create(model="replay", max_tokens=100, tools=tools,
                                         messages=[{"role": "user", "content": "go"}])
        assert message.stop_reason == "tool_use"
        assert [(b.name, b.input) for b in message.content if b.type == "tool_use"] == EXPECTED_CALLS
        assert message.content[0].text == "I will write it."
        with client.messages.stream(model="replay", max_tokens=100, tools=tools,
                                    messages=[{"role": "user", "content": "go"}]) as stream:
            final = stream.get_final_message()
        assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == EXPECTED_CALLS
        results = [{"type": "tool_result", "tool_use_id": b.id, "content": "ok"}
                   for b in message.content if b.type == "tool_use"]
        done = client.messages.create(model="replay", max_tokens=100, tools=tools, messages=[
            {"role": "user", "content": "go"}, {"role": "assistant", "content": message.content},
            {"role": "user", "content": results}])
        assert done.content[0].text == "Done." and done.stop_reason == "end_turn"


def test_api_key_is_required_in_either_header(replay):
    with replay(["one", "two", "three"], "--api-key-env", "SERVE_TEST_KEY", env={"SERVE_TEST_KEY": "s3cret"}) as base:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(anthropic.AuthenticationError) as raised:
            anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(
                model="replay", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert raised.value.body["error"]["type"] == "authentication_error"
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="replay", messages=[{"role": "user", "content": "hi"}]) \
            .choices[0].message.content == "one"
        assert anthropic.Anthropic(base_url=base, api_key="s3cret", max_retries=0).messages.create(
            model="replay", max_tokens=5, messages=[{"role": "user", "content": "hi"}]).content[0].text == "two"
        assert get_json(f"{base}/health", {"Authorization": "Bearer s3cret"})["status"] == "ok"


def test_non_loopback_bind_without_a_key_is_refused(tmp_path, capsys):
    transcript = write_transcript(tmp_path / "t.jsonl", ["x"])
    assert main(["serve", "--replay", transcript, "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err
    assert main(["serve", "--replay", transcript, "--api-key-env", "SERVE_TEST_UNSET_KEY"]) == 2
    assert "not set" in capsys.readouterr().err
    assert main(["serve", "--replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read replay transcript" in capsys.readouterr().err


def test_an_engine_failure_fails_that_request_only(replay):
    with replay(["only one"]) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        assert client.chat.completions.create(model="replay", messages=[{"role": "user", "content": "a"}]) \
            .choices[0].message.content == "only one"
        with pytest.raises(openai.InternalServerError, match="no more outputs"):
            client.chat.completions.create(model="replay", messages=[{"role": "user", "content": "b"}])
        with pytest.raises(anthropic.InternalServerError):
            anthropic.Anthropic(base_url=base, api_key="x", max_retries=0).messages.create(
                model="replay", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert get_json(f"{base}/health")["status"] == "ok"


def test_agent_openai_backend_runs_fix_through_serve(replay, tmp_path, capsys):
    repo = make_sample_repo(tmp_path / "repo")
    read = f"Let me look.<|tool_call>call:read_file{{path:{S}calc/ops.py{S}}}<tool_call|>"
    edit = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
            f"new:{S}return a + b{S}}}<tool_call|>")
    with replay([read, edit, "Fixed add."]) as base:
        code = main(["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--backend", "openai",
                     "--base-url", f"{base}/v1", "--model-name", "replay", "--no-sandbox", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["status"] == "fixed" and report["steps"] == 2  # the test passes after the edit
    assert "+    return a + b" in report["patch"].splitlines()
