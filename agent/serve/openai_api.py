"""OpenAI Chat Completions (`/v1/chat/completions`), legacy Completions (`/v1/completions`) and `/v1/models`."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from agent.serve.engine import Engine, GenRequest
from agent.serve.errors import ApiError, require
from agent.serve.generation import Generation
from agent.serve.params import (check_model, integer, json_arguments, number, resolve_tool_choice, stop_list,
                                tool_declaration, tool_list)
from agent.serve.turns import Call, Text

DEFAULT_MAX_TOKENS = 2048


def content_text(content: Any, param: str) -> str:
    """A message's content (a string or a list of text parts) as text; other part types are refused."""
    if content is None or isinstance(content, str):
        return content or ""
    require(isinstance(content, list), "content must be a string or a list of content parts", param)
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "input_text", "output_text"):
            raise ApiError(400, f"unsupported content type {kind!r}: this server reads text only", param=param,
                           code="unsupported_content_type")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def chat_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI chat messages to the renderer's conversation (tool results named after the call they answer)."""
    require(isinstance(messages, list) and bool(messages), "messages must be a non-empty list", "messages")
    names: dict[str, str] = {}
    result = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        require(isinstance(message, dict), "each message must be an object", param)
        role = message.get("role")
        content = content_text(message.get("content"), f"{param}.content")
        if role in ("system", "developer", "user"):
            result.append({"role": "user" if role == "user" else "system", "content": content})
        elif role == "assistant":
            calls = []
            for j, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") if isinstance(call, dict) else None
                require(isinstance(function, dict) and isinstance(function.get("name"), str),
                        "each tool call needs function.name", f"{param}.tool_calls[{j}]")
                names[str(call.get("id"))] = function["name"]
                calls.append({"name": function["name"],
                              "arguments": json_arguments(function.get("arguments"), f"{param}.tool_calls[{j}]")})
            result.append({"role": "assistant", "content": content, "tool_calls": calls})
        elif role == "tool":
            name = names.get(str(message.get("tool_call_id")), message.get("name") or "tool")
            result.append({"role": "tool", "name": name, "content": content})
        else:
            raise ApiError(400, f"unsupported message role {role!r}", param=f"{param}.role")
    return result


def _chat_tool(tool: dict, param: str) -> dict[str, Any]:
    function = tool.get("function")
    require(tool.get("type", "function") == "function" and isinstance(function, dict),
            "only function tools are supported ({\"type\": \"function\", \"function\": {...}})", param)
    return tool_declaration(function.get("name"), function.get("description"), function.get("parameters"), param)


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    return tool_list(tools, _chat_tool)


def sampling(body: dict, request: GenRequest) -> None:
    request.temperature = number(body, "temperature", 0.0, 0.0, 2.0)
    request.top_p = number(body, "top_p", 1.0, 0.0, 1.0)
    require(request.top_p > 0, "top_p must be greater than 0", "top_p")
    request.seed = integer(body, "seed", None, low=0)
    require(integer(body, "n", 1) == 1, "n must be 1: this server returns one choice", "n")
    require(not body.get("logprobs"), "logprobs are not supported", "logprobs")


def chat_request(body: dict, engine: Engine) -> tuple[GenRequest, list[str]]:
    check_model(engine.model_id, body.get("model"))
    messages = chat_messages(body.get("messages"))
    tools = chat_tools(body.get("tools"))
    choice = body.get("tool_choice")
    kind, name = (choice.get("type"), (choice.get("function") or {}).get("name")) if isinstance(choice, dict) \
        else (choice, None)
    prefix, offered = resolve_tool_choice(kind, name, {t["name"] for t in tools})
    request = GenRequest(messages=messages, tools=tools if offered else [], prefix=prefix)
    limit = integer(body, "max_completion_tokens", None)
    request.max_tokens = limit or integer(body, "max_tokens", DEFAULT_MAX_TOKENS)
    sampling(body, request)
    return request, stop_list(body.get("stop"), "stop", 4)


def _usage(generation: Generation) -> dict[str, Any]:
    prompt, cached, completion = generation.usage_numbers()
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _tool_call(call: Call, index: int) -> dict[str, Any]:
    return {"index": index, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}


async def chat_completion(generation: Generation, model: str) -> dict[str, Any]:
    text, calls = await generation.collect()
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = [{k: v for k, v in _tool_call(c, i).items() if k != "index"}
                                 for i, c in enumerate(calls)]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": generation.finish_reason,
                                         "logprobs": None}],
            "usage": _usage(generation)}


async def chat_chunks(generation: Generation, model: str, include_usage: bool) -> AsyncIterator[str]:
    """SSE data payloads of a streamed chat completion, ending with [DONE]."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}

    def chunk(delta: dict, finish: str | None = None) -> str:
        return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                "logprobs": None}]})

    yield chunk({"role": "assistant", "content": ""})
    index = 0
    async for event in generation.events():
        if isinstance(event, Text):
            yield chunk({"content": event.text})
        else:
            yield chunk({"tool_calls": [_tool_call(event, index)]})
            index += 1
    yield chunk({}, generation.finish_reason)
    if include_usage:
        yield json.dumps({**base, "choices": [], "usage": _usage(generation)})
    yield "[DONE]"


def completion_request(body: dict, engine: Engine) -> tuple[GenRequest, list[str]]:
    check_model(engine.model_id, body.get("model"))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    require(isinstance(prompt, str) and bool(prompt), "prompt must be a non-empty string", "prompt")
    require(not body.get("echo") and not body.get("suffix"), "echo and suffix are not supported", "echo")
    request = GenRequest(text=prompt, max_tokens=integer(body, "max_tokens", 16))
    sampling(body, request)
    return request, stop_list(body.get("stop"), "stop", 4)


async def completion(generation: Generation, model: str) -> dict[str, Any]:
    text, _ = await generation.collect()
    finish = "length" if generation.finish_reason == "length" else "stop"
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(generation)}


async def completion_chunks(generation: Generation, model: str) -> AsyncIterator[str]:
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model}
    async for event in generation.events():
        if isinstance(event, Text):
            yield json.dumps({**base, "choices": [{"index": 0, "text": event.text, "finish_reason": None}]})
    finish = "length" if generation.finish_reason == "length" else "stop"
    yield json.dumps({**base, "choices": [{"index": 0, "text": "", "finish_reason": finish}],
                      "usage": _usage(generation)})
    yield "[DONE]"


def models(model: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "gemma-agent"}]}
