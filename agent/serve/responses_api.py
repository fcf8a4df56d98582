"""OpenAI Responses API (`/v1/responses`) as Codex CLI uses it: input items (messages, `function_call`,
`function_call_output`), function tools, and the streamed `response.*` events."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from agent.serve.engine import Engine, GenRequest
from agent.serve.errors import ApiError, require
from agent.serve.generation import Generation
from agent.serve.openai_api import content_text, sampling
from agent.serve.params import (check_model, integer, json_arguments, resolve_tool_choice, tool_declaration,
                                tool_list)
from agent.serve.turns import Call, Text

DEFAULT_MAX_TOKENS = 4096
SKIPPED_ITEMS = ("reasoning",)  # earlier reasoning summaries: nothing to render


def input_messages(body: dict) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        require(isinstance(body["instructions"], str), "instructions must be a string", "instructions")
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return messages + [{"role": "user", "content": items}]
    require(isinstance(items, list) and bool(items), "input must be a string or a non-empty list of items", "input")
    names: dict[str, str] = {}
    for i, item in enumerate(items):
        param = f"input[{i}]"
        require(isinstance(item, dict), "each input item must be an object", param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            require(role in ("user", "system", "developer", "assistant"), f"unsupported role {role!r}", param)
            text = content_text(item.get("content"), f"{param}.content")
            role = {"developer": "system"}.get(role, role)
            if role == "assistant" and messages and messages[-1]["role"] == "assistant" and \
                    not messages[-1]["tool_calls"]:
                messages[-1]["content"] += text
            else:
                messages.append({"role": role, "content": text, **({"tool_calls": []} if role == "assistant" else {})})
        elif kind == "function_call":
            require(isinstance(item.get("name"), str), "function_call needs a name", param)
            names[str(item.get("call_id"))] = item["name"]
            call = {"name": item["name"], "arguments": json_arguments(item.get("arguments"), param)}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else content_text(output, f"{param}.output")
            messages.append({"role": "tool", "name": names.get(str(item.get("call_id")), "tool"), "content": text})
        elif kind not in SKIPPED_ITEMS:
            raise ApiError(400, f"unsupported input item type {kind!r}", param=f"{param}.type")
    return messages


def _function_tool(tool: dict, param: str) -> dict[str, Any] | None:
    if tool.get("type") != "function":
        return None  # hosted tools (web search, ...) and tool namespaces: only function tools can be rendered
    return tool_declaration(tool.get("name"), tool.get("description"), tool.get("parameters"), param)


def response_tools(tools: Any) -> list[dict[str, Any]]:
    return tool_list(tools, _function_tool)


def responses_request(body: dict, engine: Engine) -> GenRequest:
    check_model(engine.model_id, body.get("model"))
    require(not body.get("previous_response_id"), "previous_response_id is not supported (responses are not "
            "stored): send the whole conversation as input", "previous_response_id")
    messages = input_messages(body)
    tools = response_tools(body.get("tools"))
    choice = body.get("tool_choice")
    kind, name = (choice.get("type"), choice.get("name")) if isinstance(choice, dict) else (choice, None)
    prefix, offered = resolve_tool_choice(kind, name, {t["name"] for t in tools})
    request = GenRequest(messages=messages, tools=tools if offered else [], prefix=prefix,
                         max_tokens=integer(body, "max_output_tokens", DEFAULT_MAX_TOKENS))
    sampling({k: v for k, v in body.items() if k in ("temperature", "top_p", "seed")}, request)
    return request


class ResponseBuilder:
    """The response object and its output items, built as events arrive."""

    def __init__(self, model: str, body: dict):
        self.id = f"resp_{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.echo = {k: body.get(k) for k in ("instructions", "tool_choice", "tools", "parallel_tool_calls",
                                              "temperature", "top_p", "metadata")}

    def message_item(self) -> dict[str, Any]:
        item = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "in_progress", "role": "assistant",
                "content": []}
        self.output.append(item)
        return item

    def call_item(self, call: Call) -> dict[str, Any]:
        item = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": f"call_{uuid.uuid4().hex[:24]}",
                "name": call.name, "arguments": json.dumps(call.arguments), "status": "completed"}
        self.output.append(item)
        return item

    def response(self, status: str, generation: Generation | None = None) -> dict[str, Any]:
        body = {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "model": self.model, "output": self.output, "error": None, "incomplete_details": None,
                "usage": None, **{k: v for k, v in self.echo.items()}}
        body["tools"] = body["tools"] or []
        body["tool_choice"] = body["tool_choice"] or "auto"
        body["parallel_tool_calls"] = body["parallel_tool_calls"] is not False
        if generation is not None:
            prompt, cached, completion = generation.usage_numbers()
            body["usage"] = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                             "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": prompt + completion}
            if generation.finish_reason == "length":
                body["status"] = "incomplete"
                body["incomplete_details"] = {"reason": "max_output_tokens"}
        return body


async def response(generation: Generation, model: str, body: dict) -> dict[str, Any]:
    builder = ResponseBuilder(model, body)
    text, calls = await generation.collect()
    if text:
        item = builder.message_item()
        item["status"] = "completed"
        item["content"] = [{"type": "output_text", "text": text, "annotations": []}]
    for call in calls:
        builder.call_item(call)
    return builder.response("completed", generation)


async def response_events(generation: Generation, model: str, body: dict) -> AsyncIterator[tuple[str, str]]:
    """(event type, JSON data) pairs of a streamed response."""
    builder = ResponseBuilder(model, body)
    sequence = 0

    def event(kind: str, **data: Any) -> tuple[str, str]:
        nonlocal sequence
        sequence += 1
        return kind, json.dumps({"type": kind, "sequence_number": sequence - 1, **data})

    yield event("response.created", response=builder.response("in_progress"))
    yield event("response.in_progress", response=builder.response("in_progress"))
    message, text = None, ""

    def close_message():
        index = builder.output.index(message)
        part = {"type": "output_text", "text": text, "annotations": []}
        message["content"], message["status"] = [part], "completed"
        ids = {"item_id": message["id"], "output_index": index, "content_index": 0}
        return [event("response.output_text.done", **ids, text=text),
                event("response.content_part.done", **ids, part=part),
                event("response.output_item.done", output_index=index, item=message)]

    async for item in generation.events():
        if isinstance(item, Text):
            if message is None:
                message, text = builder.message_item(), ""
                index = len(builder.output) - 1
                yield event("response.output_item.added", output_index=index, item=message)
                yield event("response.content_part.added", item_id=message["id"], output_index=index,
                            content_index=0, part={"type": "output_text", "text": "", "annotations": []})
            text += item.text
            yield event("response.output_text.delta", item_id=message["id"],
                        output_index=builder.output.index(message), content_index=0, delta=item.text)
            continue
        if message is not None:
            for e in close_message():
                yield e
            message = None
        call = builder.call_item(item)
        index = len(builder.output) - 1
        yield event("response.output_item.added", output_index=index, item={**call, "arguments": "",
                                                                             "status": "in_progress"})
        yield event("response.function_call_arguments.delta", item_id=call["id"], output_index=index,
                    delta=call["arguments"])
        yield event("response.function_call_arguments.done", item_id=call["id"], output_index=index,
                    arguments=call["arguments"])
        yield event("response.output_item.done", output_index=index, item=call)
    if message is not None:
        for e in close_message():
            yield e
    final = builder.response("completed", generation)
    yield event("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
