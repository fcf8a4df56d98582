"""Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`) as Claude Code uses it: system
prompt, `tool_use` / `tool_result` blocks, `stop_sequences`, and the streamed message events."""
from __future__ import annotations

import json
import uuid
from typing import Any, AsyncIterator

from agent.serve.engine import Engine, GenRequest
from agent.serve.errors import ApiError, require
from agent.serve.generation import Generation
from agent.serve.params import (check_model, integer, number, resolve_tool_choice, stop_list, tool_declaration,
                                tool_list)
from agent.serve.turns import Call, Text

SKIPPED_BLOCKS = ("thinking", "redacted_thinking")  # earlier reasoning: nothing to render


def block_text(content: Any, param: str) -> str:
    """Text of a string or of a list of text blocks; images and documents are refused."""
    if isinstance(content, str):
        return content
    require(isinstance(content, list), "content must be a string or a list of content blocks", param)
    texts = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in SKIPPED_BLOCKS:
            continue
        if kind != "text":
            raise ApiError(400, f"unsupported content type {kind!r}: this server reads text only", param=param)
        texts.append(str(block.get("text", "")))
    return "".join(texts)


def conversation(body: dict) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": block_text(body["system"], "system")})
    items = body.get("messages")
    require(isinstance(items, list) and bool(items), "messages: must be a non-empty list", "messages")
    names: dict[str, str] = {}
    for i, message in enumerate(items):
        param = f"messages.{i}"
        require(isinstance(message, dict) and message.get("role") in ("user", "assistant", "system"),
                f"{param}.role: must be user or assistant", param)
        content = message.get("content")
        if message["role"] == "system":  # Claude Code sends extra system context as messages
            messages.append({"role": "system", "content": block_text(content, f"{param}.content")})
            continue
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        require(isinstance(blocks, list), f"{param}.content: must be a string or a list of blocks", param)
        if message["role"] == "assistant":
            text, calls = [], []
            for j, block in enumerate(blocks):
                kind = block.get("type") if isinstance(block, dict) else None
                if kind == "tool_use":
                    require(isinstance(block.get("name"), str) and isinstance(block.get("input", {}), dict),
                            f"{param}.content.{j}: tool_use needs a name and an input object", param)
                    names[str(block.get("id"))] = block["name"]
                    calls.append({"name": block["name"], "arguments": block.get("input") or {}})
                else:
                    text.append(block_text([block], f"{param}.content.{j}"))
            messages.append({"role": "assistant", "content": "".join(text), "tool_calls": calls})
            continue
        text = []
        for j, block in enumerate(blocks):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                result = block.get("content")
                result = block_text(result, f"{param}.content.{j}.content") if result is not None else ""
                if block.get("is_error"):
                    result = f"error: {result}"
                messages.append({"role": "tool", "name": names.get(str(block.get("tool_use_id")), "tool"),
                                 "content": result})
            else:
                text.append(block_text([block], f"{param}.content.{j}"))
        if text and "".join(text).strip() or not messages or messages[-1]["role"] != "tool":
            messages.append({"role": "user", "content": "".join(text)})
    return messages


def _custom_tool(tool: dict, param: str) -> dict[str, Any] | None:
    if tool.get("type") not in (None, "custom"):
        return None  # server tools (web search, ...) that a local model cannot run
    return tool_declaration(tool.get("name"), tool.get("description"), tool.get("input_schema"), param)


def anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    return tool_list(tools, _custom_tool)


def _tool_choice(body: dict, tools: list[dict[str, Any]]) -> tuple[str, bool]:
    choice = body.get("tool_choice") or {}
    require(isinstance(choice, dict), "tool_choice: must be an object", "tool_choice")
    kind = {"any": "required", "tool": "function"}.get(choice.get("type"), choice.get("type"))
    return resolve_tool_choice(kind, choice.get("name"), {t["name"] for t in tools})


def count_request(body: dict, engine: Engine) -> GenRequest:
    check_model(engine.model_id, body.get("model"))
    tools = anthropic_tools(body.get("tools"))
    return GenRequest(messages=conversation(body), tools=tools)


def messages_request(body: dict, engine: Engine) -> tuple[GenRequest, list[str]]:
    request = count_request(body, engine)
    max_tokens = body.get("max_tokens")
    require(max_tokens is not None, "max_tokens: Field required", "max_tokens")
    request.max_tokens = integer(body, "max_tokens", None)
    request.prefix, offered = _tool_choice(body, request.tools)
    if not offered:
        request.tools = []
    request.temperature = number(body, "temperature", 0.0, 0.0, 1.0)
    request.top_p = number(body, "top_p", 1.0, 0.0, 1.0)
    require(request.top_p > 0, "top_p: must be greater than 0", "top_p")
    return request, stop_list(body.get("stop_sequences"), "stop_sequences", 64)


def _stop_reason(generation: Generation) -> str:
    return {"tool_calls": "tool_use", "length": "max_tokens"}.get(
        generation.finish_reason, "stop_sequence" if generation.splitter.stopped_by else "end_turn")


def _usage(generation: Generation, output_only: bool = False) -> dict[str, int]:
    prompt, cached, completion = generation.usage_numbers()
    if output_only:
        return {"output_tokens": completion}
    return {"input_tokens": prompt - cached, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0,
            "output_tokens": completion}


def _tool_use(call: Call) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": call.name, "input": call.arguments}


def _message(model: str, content: list, generation: Generation | None) -> dict[str, Any]:
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": _stop_reason(generation) if generation and generation.done else None,
            "stop_sequence": generation.splitter.stopped_by if generation else None,
            "usage": _usage(generation) if generation and generation.done else
            {"input_tokens": 0, "output_tokens": 0}}


async def message(generation: Generation, model: str) -> dict[str, Any]:
    text, calls = await generation.collect()
    content = ([{"type": "text", "text": text}] if text else []) + [_tool_use(c) for c in calls]
    return _message(model, content, generation)


async def message_events(generation: Generation, model: str) -> AsyncIterator[tuple[str, str]]:
    """(event name, JSON data) pairs of a streamed message."""
    def event(kind: str, **data: Any) -> tuple[str, str]:
        return kind, json.dumps({"type": kind, **data})

    start = _message(model, [], None)
    yield event("message_start", message=start)
    index, text_open = 0, False
    async for item in generation.events():
        if isinstance(item, Text):
            if not text_open:
                yield event("content_block_start", index=index, content_block={"type": "text", "text": ""})
                text_open = True
            yield event("content_block_delta", index=index, delta={"type": "text_delta", "text": item.text})
            continue
        if text_open:
            yield event("content_block_stop", index=index)
            index, text_open = index + 1, False
        block = _tool_use(item)
        yield event("content_block_start", index=index, content_block={**block, "input": {}})
        yield event("content_block_delta", index=index,
                    delta={"type": "input_json_delta", "partial_json": json.dumps(item.arguments)})
        yield event("content_block_stop", index=index)
        index += 1
    if text_open:
        yield event("content_block_stop", index=index)
    yield event("message_delta", delta={"stop_reason": _stop_reason(generation),
                                        "stop_sequence": generation.splitter.stopped_by},
                usage=_usage(generation))
    yield event("message_stop")
