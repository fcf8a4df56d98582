"""Gemma 4 chat format: render a conversation (with tools) to the exact prompt text the model was trained on.

The output is byte for byte what the 12B's official chat template (Google's "Gemma 4 Canonical Chat Template",
2026-07-09, shared by the 12B/26B/31B) renders through `apply_chat_template(messages, tools=...,
add_generation_prompt=True, enable_thinking=...)`; tests/test_chat_format_exact.py holds the proof. Facts of that
format, as the template defines them:
- turns are `<|turn>ROLE\\n ... <turn|>\\n`; text is trimmed; the system turn carries the tool declarations
  (`<|tool>declaration:NAME{...}<tool|>`) and, in thinking mode, a leading `<|think|>`;
- values use bare keys sorted case-insensitively and `<|"|>` around strings; schema types are upper-cased and
  empty `properties`/`required` are left out;
- calls come before the turn's text (`<|tool_call>call:NAME{...}<tool_call|>`), then the answers to them
  (`<|tool_response>response:NAME{value:...}<tool_response|>`), then the text; after answers the model turn stays
  open for the model to continue, and a user turn after answers closes it first;
- a new model turn opens with an empty thought channel (`<|channel>thought\\n<channel|>`) when thinking is off; in
  thinking mode the prompt after tool answers opens the thought channel. Past thoughts are never rendered.

Conversations are lists of messages: {"role": "system"|"user"|"assistant"|"tool", "content": str,
"tool_calls": [{"name", "arguments"}] (assistant), "name": str (tool; content may also be a dict, a structured
result)}. The agent writes a model turn's text and its calls as two assistant messages (text, then calls), which
renders in the order the model generated them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BOS = "<bos>"
TURN_START = "<|turn>"
TURN_END = "<turn|>"
TOOL_DECL_START = "<|tool>"
TOOL_DECL_END = "<tool|>"
CALL_START = "<|tool_call>"
CALL_END = "<tool_call|>"
RESPONSE_START = "<|tool_response>"
RESPONSE_END = "<tool_response|>"
STR = '<|"|>'
CHANNEL_START = "<|channel>"
CHANNEL_END = "<channel|>"
THINK = "<|think|>"
EOS = "<eos>"
THOUGHT_OPEN = f"{CHANNEL_START}thought\n"  # how the template opens a thought channel
EMPTY_THOUGHT = f"{THOUGHT_OPEN}{CHANNEL_END}"  # a new model turn with thinking off starts with this

# Generation stops at any of these: end of turn, or the model asking for a tool result.
STOP_STRINGS = (TURN_END, RESPONSE_START, EOS)
# Every control string of the format: none of them can be escaped inside a string value.
CONTROL_MARKERS = (BOS, TURN_START, TURN_END, TOOL_DECL_START, TOOL_DECL_END, CALL_START, CALL_END, RESPONSE_START,
                   RESPONSE_END, STR, CHANNEL_START, CHANNEL_END, THINK, EOS)

EXPECTED_CALL_FORM = f'{CALL_START}call:read_file{{path:{STR}src/app.py{STR},start_line:1}}{CALL_END}'

# Keys of a property schema that the template's key-filtering branch skips.
_SCHEMA_KEYS = ("description", "type", "properties", "required", "nullable")


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: the tool name and its arguments."""

    name: str
    arguments: dict[str, Any]

    def signature(self) -> str:
        """A canonical string identifying the call, used to detect repeats."""
        return self.name + json.dumps(self.arguments, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------------- values


def _sorted_items(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    # The template's `dictsort`: by key, case-insensitively, ties in insertion order.
    return sorted(mapping.items(), key=lambda item: item[0].lower() if isinstance(item[0], str) else item[0])


def render_value(value: Any, *, escape_keys: bool = False) -> str:
    """A JSON-like value in Gemma 4's notation (the template's `format_argument`): bare keys unless
    `escape_keys`, `<|"|>` around strings, numbers as Python prints them."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"{STR}{value}{STR}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        items = (
            (f"{STR}{key}{STR}" if escape_keys else str(key)) + ":" + render_value(item, escape_keys=escape_keys)
            for key, item in _sorted_items(value)
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_value(item, escape_keys=escape_keys) for item in value) + "]"
    return str(value)


def _fields(value: dict[str, Any]) -> str:
    return ",".join(f"{key}:{render_value(item)}" for key, item in _sorted_items(value))


# ---------------------------------------------------------------------------------------------------- declarations


def _get(schema: Any, key: str) -> Any:
    return schema.get(key) if isinstance(schema, dict) else None


def _upper(value: Any) -> str:
    # Jinja's `upper` filter: text of anything (an absent key is empty), upper-cased.
    return "" if value is None else (value if isinstance(value, str) else str(value)).upper()


def _string_list(items: Any) -> str:
    return "[" + ",".join(f"{STR}{item}{STR}" for item in items) + "]"


def _items_schema(items: dict[str, Any]) -> str:
    parts = []
    for key, value in _sorted_items(items):
        if value is None:
            continue
        if key == "properties":
            parts.append("properties:{" + (_properties(value) if isinstance(value, dict) else "") + "}")
        elif key == "required":
            parts.append("required:" + _string_list(value))
        elif key == "type":
            upper = value.upper() if isinstance(value, str) else [_upper(v) for v in value]
            parts.append("type:" + render_value(upper, escape_keys=True))
        else:
            parts.append(f"{key}:" + render_value(value, escape_keys=True))
    return ",".join(parts)


def _property(schema: Any) -> str:
    kind = _upper(_get(schema, "type"))
    parts = []
    if _get(schema, "description"):
        parts.append(f"description:{STR}{schema['description']}{STR}")
    if kind == "STRING" and _get(schema, "enum"):
        parts.append("enum:" + render_value(schema["enum"], escape_keys=True))
    elif kind == "ARRAY" and isinstance(_get(schema, "items"), dict) and schema["items"]:
        parts.append("items:{" + _items_schema(schema["items"]) + "}")
    if _get(schema, "nullable"):
        parts.append("nullable:true")
    if kind == "OBJECT":
        if isinstance(schema.get("properties"), dict):
            parts.append("properties:{" + _properties(schema["properties"]) + "}")
        else:  # the template lists an object's own non-schema keys as its properties
            parts.append("properties:{" + _properties(schema, skip_schema_keys=True) + "}")
        if schema.get("required"):
            parts.append("required:" + _string_list(schema["required"]))
    parts.append(f"type:{STR}{kind}{STR}")
    return "{" + ",".join(parts) + "}"


def _properties(properties: dict[str, Any], *, skip_schema_keys: bool = False) -> str:
    return ",".join(
        f"{key}:{_property(schema)}"
        for key, schema in _sorted_items(properties)
        if not (skip_schema_keys and key in _SCHEMA_KEYS)
    )


def render_declaration(declaration: dict[str, Any]) -> str:
    """One tool ({"name", "description", "parameters"}) as a `<|tool>` block. As in the template, a parameters
    object without a `type` is left unclosed."""
    text = f"declaration:{declaration['name']}{{description:{STR}{declaration.get('description', '')}{STR}"
    params = declaration.get("parameters")
    if params:
        text += ",parameters:{"
        if params.get("properties"):
            text += "properties:{" + _properties(params["properties"]) + "},"
        if params.get("required"):
            text += "required:" + _string_list(params["required"]) + ","
        if params.get("type"):
            text += f"type:{STR}{_upper(params['type'])}{STR}}}"
    return f"{TOOL_DECL_START}{text}}}{TOOL_DECL_END}"


# ---------------------------------------------------------------------------------------------------- turns


def _call_parts(call: ToolCall | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (call.name, call.arguments) if isinstance(call, ToolCall) else (call["name"], call.get("arguments"))


def render_tool_call(call: ToolCall | dict[str, Any]) -> str:
    name, arguments = _call_parts(call)
    return f"{CALL_START}call:{name}{{{_fields(arguments or {})}}}{CALL_END}"


def render_tool_response(name: str, content: Any) -> str:
    """A tool's answer: text (or any non-object value) as `{value:...}`, a structured result as its fields."""
    body = _fields(content) if isinstance(content, dict) else "value:" + render_value(content)
    return f"{RESPONSE_START}response:{name}{{{body}}}{RESPONSE_END}"


def strip_thinking(text: str) -> str:
    """A past model turn's text without its thought channels, trimmed (the template's `strip_thinking`)."""
    kept = (part.split(CHANNEL_START)[0] for part in text.split(CHANNEL_END))
    return "".join(kept).strip()


def _text(message: dict[str, Any], role: str) -> str:
    content = message.get("content")
    if not isinstance(content, str):
        return ""
    return strip_thinking(content) if role == "model" else content.strip()


def _system_turn(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, thinking: bool) -> str:
    head = THINK + "\n" if thinking else ""
    if messages and messages[0]["role"] in ("system", "developer"):
        content = messages[0].get("content")
        head += content.strip() if isinstance(content, str) else ""
    declarations = "".join(render_declaration(tool) for tool in tools or ())
    return f"{TURN_START}system\n{head}{declarations}{TURN_END}\n"


def render_conversation(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    thinking: bool = False,
) -> str:
    """The full prompt text: the official template's rendering of `messages` with these tool declarations."""
    parts = [BOS]
    has_system = bool(messages) and messages[0]["role"] in ("system", "developer")
    last_kind = None  # what ended the output so far: "tool_call", "tool_response" or None
    if thinking or tools or has_system:
        parts.append(_system_turn(messages, tools, thinking))
    body = messages[1:] if has_system else messages
    previous_role = None
    for index, message in enumerate(body):
        if message["role"] == "tool":
            continue
        last_kind = None
        role = "model" if message["role"] == "assistant" else message["role"]
        if not (role == "model" and previous_role == "assistant"):
            parts.append(f"{TURN_START}{role}\n")
        calls = message.get("tool_calls")
        answered = False
        if calls:
            parts.extend(render_tool_call(call) for call in calls)
            last_kind = "tool_call"
            for follow in body[index + 1 :]:
                if follow["role"] != "tool":
                    break
                parts.append(render_tool_response(follow.get("name") or "unknown", follow.get("content")))
                answered, last_kind = True, "tool_response"
        text = _text(message, role)
        parts.append(text)
        next_role = next((m["role"] for m in body[index + 1 :] if m["role"] != "tool"), None)
        if last_kind == "tool_call" and not answered:
            parts.append(RESPONSE_START)
        elif role == "model" and next_role == "assistant" and (not calls or answered):
            pass  # the next assistant message continues this model turn
        elif not (answered and not text and next_role is None):
            parts.append(f"{TURN_END}\n")
        previous_role = message["role"]
    if add_generation_prompt:
        parts.append(generation_prompt(last_kind, thinking=thinking))
    return "".join(parts)


def generation_prompt(last_kind: str | None, *, thinking: bool = False) -> str:
    """What asks the model for its turn: a new model turn (with an empty thought channel unless thinking), or,
    after tool answers, nothing (the model continues its turn) or, in thinking mode, an open thought channel."""
    if last_kind not in ("tool_response", "tool_call"):
        return f"{TURN_START}model\n" + ("" if thinking else EMPTY_THOUGHT)
    return THOUGHT_OPEN if last_kind == "tool_response" and thinking else ""


def opens_thought(prompt: str) -> bool:
    """Whether generation after `prompt` starts inside a thought channel (its first `<channel|>` ends it)."""
    return prompt.endswith(THOUGHT_OPEN)


def assistant_messages(text: str, calls: list[ToolCall]) -> list[dict[str, Any]]:
    """How the agent records a model turn: its text, then its calls, as separate assistant messages so the
    template renders them in the order they were generated (it puts a message's text after its calls' answers)."""
    messages: list[dict[str, Any]] = []
    if text or not calls:
        messages.append({"role": "assistant", "content": text})
    if calls:
        messages.append({"role": "assistant", "content": "",
                         "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls]})
    return messages


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our messages in the shape chat templates expect: OpenAI style, calls under `function` with ids that the
    answers point back to. A template reads structured (non-text) answers only from the assistant message's
    `tool_responses`, so a group of answers with any such result goes there."""
    result: list[dict[str, Any]] = []
    pending: list[str] = []
    for index, message in enumerate(messages):
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                name, arguments = _call_parts(call)
                calls.append({"id": f"call_{index}_{len(calls)}", "type": "function",
                              "function": {"name": name, "arguments": arguments}})
            pending = [call["id"] for call in calls]
            converted = {**message, "tool_calls": calls}
            answers = []
            for follow in messages[index + 1 :]:
                if follow["role"] != "tool":
                    break
                answers.append({"name": follow.get("name"), "response": follow.get("content")})
            if any(not isinstance(answer["response"], str) for answer in answers):
                converted["tool_responses"] = answers
            result.append(converted)
        elif message["role"] == "tool" and pending:
            result.append({**message, "tool_call_id": pending.pop(0)})
        else:
            result.append(dict(message))
    return result


def template_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Our tool declarations in the OpenAI shape chat templates expect."""
    return [{"type": "function", "function": tool} for tool in tools] if tools else None


def __getattr__(name: str) -> Any:
    """Reading turns back lives in agent.call_parser; its entry points can be imported from here too."""
    if name in ("ParsedTurn", "parse_call_body", "parse_model_output"):
        from agent import call_parser

        return getattr(call_parser, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
