"""The openai backend against a real local HTTP server (127.0.0.1 only) that streams SSE chunks."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.backends import BackendUnavailable
from agent.backends.openai import OpenAIBackend
from agent.session import Session
from tools.toolbox import Toolbox, ToolSettings


def sse(*events):
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def delta(**fields):
    return {"choices": [{"index": 0, "delta": fields}]}


TURNS = [
    sse(delta(content="Let me "), delta(content="add a note."),
        delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "add_note", "arguments": '{"li'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": 'ne": "from server"}'}}]),
        {"choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 17}}),
    sse(delta(tool_calls=[{"index": 0, "function": {"name": "add_note", "arguments": '{"line": '}}])),
    sse(delta(content="Done.")),
]


@pytest.fixture
def server():
    yield from serve(TURNS)


def serve(turns):
    requests, replies = [], list(turns)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if not replies:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b'{"error": "no more replies"}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for line in replies.pop(0).splitlines(keepends=True):
                self.wfile.write(line.encode())
                self.wfile.flush()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests
    httpd.shutdown()


def test_streamed_text_and_tool_calls_drive_the_loop(server, tmp_path, monkeypatch):
    url, requests = server
    monkeypatch.setenv("MY_KEY", "sekrit")
    backend = OpenAIBackend(url, "gemma-test", api_key_env="MY_KEY")
    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=["tests.fixtures.agent.demo_tools"])
    streamed = []
    session = Session(backend, toolbox, "system")
    session.listener.on_text = streamed.append
    outcome = session.ask("add a note")
    assert outcome.reason == "finished" and outcome.steps == 3
    assert (tmp_path / "notes.txt").read_text() == "from server\n"
    assert "".join(streamed).startswith("Let me add a note.")
    assert session.usage.tokens_in >= 120 and session.usage.tokens_out >= 17
    first, second, third = requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sekrit"
    assert first["body"]["stream"] is True and first["body"]["model"] == "gemma-test"
    assert {t["function"]["name"] for t in first["body"]["tools"]} == {"add_note", "read_notes"}
    sent = second["body"]["messages"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "add_note", "arguments": '{"line": "from server"}'}
    assert sent[3] == {"role": "tool", "tool_call_id": sent[2]["tool_calls"][0]["id"],
                       "content": "notes.txt now has 1 line(s)"}
    # The second reply had truncated JSON arguments: the model was shown the expected form.
    assert "could not be parsed" in third["body"]["messages"][-1]["content"]


def test_server_errors_end_the_session_with_a_reason(server, tmp_path):
    url, _ = server
    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=[])
    backend = OpenAIBackend(url, "m")
    for _ in TURNS:
        backend.complete([{"role": "user", "content": "x"}], [], max_tokens=8, on_text=lambda t: None)
    outcome = Session(backend, toolbox, "s").ask("x")
    assert outcome.reason == "backend_error" and "HTTP 500" in outcome.detail
    closed = OpenAIBackend("http://127.0.0.1:9/v1", "m")
    outcome = Session(closed, toolbox, "s").ask("x")
    assert outcome.reason == "backend_error" and "is the server running" in outcome.detail


def test_missing_url_is_actionable():
    with pytest.raises(BackendUnavailable, match="--base-url"):
        OpenAIBackend(None, "m")


def test_structured_calls_map_directly_and_reasoning_is_thinking(tmp_path):
    from agent.chat_format import CALL_END, STR

    tricky = f'a {STR} b {CALL_END} c'  # would not survive a round trip through native text
    turns = [
        sse(delta(reasoning_content="The user wants "), delta(reasoning_content="a note."),
            delta(content="Adding."),
            delta(tool_calls=[{"index": 0, "id": "c1", "function": {
                "name": "add_note", "arguments": json.dumps({"line": tricky})}}])),
        sse(delta(content=f"Native text from a server without a tool parser: <|tool_call>call:read_notes{{}}"
                          f"{CALL_END}")),
    ]
    server = serve(turns)
    url, requests = next(server)
    thoughts, texts = [], []
    backend = OpenAIBackend(url, "m", thinking=True)
    declared = [{"name": "add_note"}, {"name": "read_notes"}]
    first = backend.complete([{"role": "user", "content": "x"}], declared, max_tokens=8, on_text=texts.append,
                             on_thinking=thoughts.append)
    assert first.calls[0].arguments == {"line": tricky} and first.text == "Adding." and first.errors == []
    assert first.thinking == "The user wants a note." and "".join(thoughts) == first.thinking
    assert "".join(texts) == "Adding." and requests[0]["body"]["chat_template_kwargs"] == {"enable_thinking": True}
    second = backend.complete([{"role": "user", "content": "x"}], declared, max_tokens=8, on_text=lambda t: None)
    assert [c.name for c in second.calls] == ["read_notes"] and "tool_call" not in second.text
    next(server, None)


def test_text_and_calls_of_one_turn_are_one_openai_message():
    from agent.backends.openai import to_openai_messages

    sent = to_openai_messages([
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "Reading."},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]},
        {"role": "tool", "name": "read_file", "content": {"lines": 3}},
    ])
    assert sent[1]["content"] == "Reading." and sent[1]["tool_calls"][0]["function"]["name"] == "read_file"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": '{"lines": 3}'} and len(sent) == 3
