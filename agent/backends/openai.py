"""The `openai` backend: any OpenAI-compatible chat-completions server, streamed over SSE (stdlib HTTP only)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, Iterator

from agent.backends import BackendError, BackendUnavailable, Completion, TextSink, estimate_tokens
from agent.call_parser import ParsedTurn, parse_model_output
from agent.chat_format import CHANNEL_END, CHANNEL_START, ToolCall, render_tool_call
from agent.stream import VisibleText


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our history as OpenAI chat messages: a turn's text and its calls become one assistant message, calls get
    ids, tool results point back at them (structured results as JSON text)."""
    result: list[dict[str, Any]] = []
    pending: list[str] = []
    counter = 0
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                counter += 1
                calls.append({"id": f"call_{counter}", "type": "function", "function": {
                    "name": call["name"], "arguments": json.dumps(call["arguments"])}})
            pending = [c["id"] for c in calls]
            previous = result[-1] if result else {}
            if previous.get("role") == "assistant" and "tool_calls" not in previous:
                previous["tool_calls"] = calls  # the text the model wrote before these calls
            else:
                result.append({"role": "assistant", "content": message.get("content") or None, "tool_calls": calls})
        elif role == "tool":
            call_id = pending.pop(0) if pending else f"call_{counter}"
            content = message.get("content")
            result.append({"role": "tool", "tool_call_id": call_id,
                           "content": content if isinstance(content, str) else json.dumps(content)})
        else:
            result.append({"role": role, "content": message.get("content") or ""})
    return result


def _sse_events(response: Any) -> Iterator[dict[str, Any]]:
    for line in response:
        line = line.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except json.JSONDecodeError:
            raise BackendError(f"server sent a malformed stream event: {data[:200]!r}") from None


class OpenAIBackend:
    """POSTs {base_url}/chat/completions with `tools` and `stream: true`. The server's structured `tool_calls`
    become calls directly; a server that leaves calls in the text (no tool parser) gets them parsed from it.
    Thinking mode asks for `chat_template_kwargs.enable_thinking` and shows `reasoning_content` as thinking."""

    name = "openai"

    def __init__(self, base_url: str | None, model_name: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 600,
                 *, thinking: bool = False):
        if not base_url:
            raise BackendUnavailable(
                "the openai backend needs a server URL: pass --base-url http://HOST:PORT/v1 "
                "or set [openai] base_url in .gemma-agent.toml"
            )
        if not base_url.startswith(("http://", "https://")):
            raise BackendUnavailable(f"--base-url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model_name
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout = timeout
        self.thinking = thinking

    def _request(self, body: dict[str, Any]) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int, on_text: TextSink,
        on_thinking: TextSink | None = None,
    ) -> Completion:
        body = {
            "model": self.model_name,
            "messages": to_openai_messages(messages),
            "tools": [{"type": "function", "function": d} for d in tools],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.thinking:
            body["chat_template_kwargs"] = {"enable_thinking": True}
        text, thinking, calls, usage = "", "", {}, {}
        visible = VisibleText(on_text)
        try:
            with urllib.request.urlopen(self._request(body), timeout=self.timeout) as response:
                for event in _sse_events(response):
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                        if reasoning:
                            thinking += reasoning
                            if on_thinking:
                                on_thinking(reasoning)
                        if delta.get("content"):
                            text += delta["content"]
                            visible.feed(delta["content"])
                        for part in delta.get("tool_calls") or []:
                            slot = calls.setdefault(part.get("index", len(calls)), {"name": "", "arguments": ""})
                            function = part.get("function") or {}
                            slot["name"] += function.get("name") or ""
                            slot["arguments"] += function.get("arguments") or ""
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise BackendError(f"{self.url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"cannot reach {self.url}: {reason} (is the server running?)") from None
        finally:
            visible.flush()
        if calls:
            turn = _structured_turn(text, [slot for _, slot in sorted(calls.items())])
        else:  # a server without a tool parser returns the model's native text
            turn = parse_model_output(text, {tool["name"] for tool in tools})
        turn.thinking = "\n\n".join(t for t in (thinking.strip(), turn.thinking) if t)
        raw = (f"{CHANNEL_START}thought\n{thinking}{CHANNEL_END}" if thinking else "") + text + "".join(
            render_tool_call(call) for call in turn.calls)
        return Completion.of(
            turn, raw=raw,
            tokens_in=int(usage.get("prompt_tokens") or estimate_tokens(json.dumps(body["messages"]))),
            tokens_out=int(usage.get("completion_tokens") or estimate_tokens(raw)),
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def describe(self) -> str:
        return f"openai-compatible server {self.url}, model {self.model_name}"


def _structured_turn(text: str, slots: list[dict[str, str]]) -> ParsedTurn:
    """The server's streamed calls as calls; arguments that are not a JSON object are reported to the model."""
    turn = ParsedTurn(text=text.strip(), body=text.strip())
    for slot in slots:
        try:
            arguments = json.loads(slot["arguments"] or "{}")
        except json.JSONDecodeError as exc:
            turn.errors.append(f"{slot['name']}: arguments are not valid JSON ({exc.msg}): {slot['arguments'][:80]!r}")
            continue
        if not isinstance(arguments, dict):
            turn.errors.append(f"{slot['name']}: arguments must be an object, got {slot['arguments'][:80]!r}")
            continue
        turn.calls.append(ToolCall(slot["name"], arguments))
    return turn
