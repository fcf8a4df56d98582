"""Gemma 4 chat format: render a conversation (with tools) to prompt text, parse a model turn back.

Format facts follow Google's Gemma 4 prompt-formatting and function-calling docs
(ai.google.dev/gemma/docs/core/prompt-formatting-gemma4, .../capabilities/text/function-calling-gemma4):
turns are `<|turn>ROLE\n ... <turn|>`; tool declarations sit in the system turn as
`<|tool>declaration:NAME{...}<tool|>`; the model calls a tool with `<|tool_call>call:NAME{key:value}<tool_call|>`;
results come back inside the same model turn as `<|tool_response>response:NAME{...}<tool_response|>` and the model
continues after them. Values use bare keys (sorted) and `<|"|>` around every string; turn text is trimmed. The tokenizer maps these control
strings to their special ids, so rendering to text is enough.

Conversations are lists of OpenAI-style messages: {"role": "system"|"user"|"assistant"|"tool", "content": str,
"tool_calls": [{"name", "arguments"}] (assistant), "name": str (tool)}. Rendering is append-only: the text for
messages[:k] (plus the generation prompt) is a prefix of the text for any longer list, so a KV cache can be reused.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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
EOS = "<eos>"

# Generation stops at any of these: end of turn, or the model asking for a tool result.
STOP_STRINGS = (TURN_END, RESPONSE_START, EOS)

EXPECTED_CALL_FORM = f'{CALL_START}call:read_file{{path:{STR}src/app.py{STR},start_line:1}}{CALL_END}'

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: the tool name and its arguments."""

    name: str
    arguments: dict[str, Any]

    def signature(self) -> str:
        """A canonical string identifying the call, used to detect repeats."""
        return self.name + json.dumps(self.arguments, sort_keys=True, default=str)


@dataclass
class ParsedTurn:
    """A model turn split into visible text, well-formed calls, and errors for calls that could not be parsed."""

    text: str
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    thought: str = ""

    def error_message(self) -> str:
        """What the loop tells the model about its malformed calls, including the expected form."""
        problems = "; ".join(self.errors)
        return (
            f"error: your tool call could not be parsed ({problems}). "
            f"Call a tool exactly like this, one call per block: {EXPECTED_CALL_FORM}"
        )


# ---------------------------------------------------------------------------------------------------- rendering


def render_value(value: Any) -> str:
    """Serialize a JSON-like value in Gemma 4's native notation."""
    if isinstance(value, str):
        return f"{STR}{value}{STR}"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):  # keys sorted, as the official template's dictsort does
        return "{" + ",".join(f"{key}:{render_value(value[key])}" for key in sorted(value, key=str)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_value(item) for item in value) + "]"
    return render_value(str(value))


def _upper_types(schema: Any) -> Any:
    # The Gemma 4 template writes JSON-schema types in upper case (STRING, OBJECT, ...).
    if isinstance(schema, dict):
        return {
            key: (item.upper() if key == "type" and isinstance(item, str) else _upper_types(item))
            for key, item in schema.items()
        }
    if isinstance(schema, list):
        return [_upper_types(item) for item in schema]
    return schema


def render_declaration(declaration: dict[str, Any]) -> str:
    """One tool declaration ({"name", "description", "parameters"}) as a `<|tool>` block."""
    body = {"description": declaration.get("description", "")}
    if declaration.get("parameters"):
        body["parameters"] = _upper_types(declaration["parameters"])
    return f"{TOOL_DECL_START}declaration:{declaration['name']}{render_value(body)}{TOOL_DECL_END}"


def render_tool_call(call: ToolCall | dict[str, Any]) -> str:
    name, arguments = (call.name, call.arguments) if isinstance(call, ToolCall) else (call["name"], call["arguments"])
    return f"{CALL_START}call:{name}{render_value(arguments or {})}{CALL_END}"


def render_tool_response(name: str, content: str) -> str:
    return f"{RESPONSE_START}response:{name}{render_value({'value': content})}{RESPONSE_END}"


def render_message(message: dict[str, Any], previous_role: str | None = None) -> str:
    """Render one message given the role of the message before it (tool results continue the model turn)."""
    role, content = message["role"], (message.get("content") or "").strip()  # the template trims turn text
    if role in ("system", "user"):
        tools = "".join(render_declaration(d) for d in message.get("tools", ()))
        return f"{TURN_START}{role}\n{content}{tools}{TURN_END}\n"
    if role == "assistant":
        header = "" if previous_role == "tool" else f"{TURN_START}model\n"
        calls = message.get("tool_calls") or []
        body = content + "".join(render_tool_call(call) for call in calls)
        return header + body + ("" if calls else f"{TURN_END}\n")
    if role == "tool":
        return render_tool_response(message.get("name", "tool"), message.get("content") or "")
    raise ValueError(f"unknown message role {role!r}")


def render_conversation(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *, add_generation_prompt: bool = True
) -> str:
    """The full prompt text. Tool declarations go into the system turn (one is created if there is none)."""
    messages = list(messages)
    if tools:
        if messages and messages[0]["role"] == "system":
            messages[0] = {**messages[0], "tools": tools}
        else:
            messages.insert(0, {"role": "system", "content": "", "tools": tools})
    parts, previous = [BOS], None
    for message in messages:
        parts.append(render_message(message, previous))
        previous = message["role"]
    if add_generation_prompt:
        parts.append(generation_prompt(previous))
    return "".join(parts)


def generation_prompt(last_role: str | None) -> str:
    """After tool results the model continues its own turn; otherwise a new model turn opens."""
    return "" if last_role == "tool" else f"{TURN_START}model\n"


# ---------------------------------------------------------------------------------------------------- parsing


class _SyntaxError(Exception):
    pass


class _ValueReader:
    """Recursive-descent reader for native values; also accepts JSON strings (`"..."`) the model may slip in."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        self.skip_space()
        if not self.peek(token):
            found = self.text[self.pos : self.pos + 12] or "end of text"
            raise _SyntaxError(f"expected {token!r} at position {self.pos}, found {found!r}")
        self.pos += len(token)

    def value(self, depth: int = 0) -> Any:
        if depth > 64:
            raise _SyntaxError("arguments are nested too deeply")
        self.skip_space()
        if self.pos >= len(self.text):
            raise _SyntaxError("arguments end early (truncated?)")
        if self.peek(STR):
            return self.native_string()
        char = self.text[self.pos]
        if char == '"':
            return self.json_string()
        if char == "{":
            return self.obj(depth)
        if char == "[":
            return self.array(depth)
        return self.scalar()

    def native_string(self) -> str:
        self.pos += len(STR)
        end = self.text.find(STR, self.pos)
        if end < 0:
            raise _SyntaxError(f"string is not closed with {STR}")
        value, self.pos = self.text[self.pos : end], end + len(STR)
        return value

    def json_string(self) -> str:
        decoder = json.JSONDecoder()
        try:
            value, end = decoder.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise _SyntaxError(f"bad quoted string: {exc.msg}") from None
        self.pos = end
        return value

    def key(self) -> str:
        self.skip_space()
        if self.peek(STR):
            return self.native_string()
        if self.peek('"'):
            value = self.json_string()
            if not isinstance(value, str):
                raise _SyntaxError("object keys must be names")
            return value
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise _SyntaxError(f"expected an argument name at position {self.pos}")
        self.pos = match.end()
        return match.group()

    def obj(self, depth: int) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}
        self.skip_space()
        if self.peek("}"):
            self.pos += 1
            return result
        while True:
            name = self.key()
            self.expect(":")
            result[name] = self.value(depth + 1)
            self.skip_space()
            if self.peek(","):
                self.pos += 1
                self.skip_space()
                if self.peek("}"):  # tolerate a trailing comma
                    self.pos += 1
                    return result
                continue
            self.expect("}")
            return result

    def array(self, depth: int) -> list[Any]:
        self.expect("[")
        result: list[Any] = []
        self.skip_space()
        if self.peek("]"):
            self.pos += 1
            return result
        while True:
            result.append(self.value(depth + 1))
            self.skip_space()
            if self.peek(","):
                self.pos += 1
                continue
            self.expect("]")
            return result

    def scalar(self) -> Any:
        match = re.compile(r"[^,}\]\s]+").match(self.text, self.pos)
        if not match:
            raise _SyntaxError(f"expected a value at position {self.pos}")
        word = match.group()
        self.pos = match.end()
        if word in ("true", "false"):
            return word == "true"
        if word in ("null", "None"):
            return None
        try:
            return int(word)
        except ValueError:
            pass
        try:
            return float(word)
        except ValueError:
            raise _SyntaxError(
                f"value {word!r} is not a number, true/false or null; wrap text in {STR}...{STR}"
            ) from None


def parse_call_body(body: str) -> ToolCall:
    """Parse `call:NAME{...}` (the text between the call markers). Raises ValueError with a readable reason."""
    stripped = body.strip()
    if stripped.startswith("call:"):
        stripped = stripped[len("call:") :]
    match = _IDENT.match(stripped)
    if not match:
        raise ValueError("missing tool name after 'call:'")
    name, rest = match.group(), stripped[match.end() :].strip()
    if not rest:
        return ToolCall(name, {})
    reader = _ValueReader(rest)
    try:
        arguments = reader.value() if rest.startswith("{") else None
        if arguments is None:
            raise _SyntaxError(f"arguments must be an object in braces, found {rest[:12]!r}")
        reader.skip_space()
        if reader.pos != len(rest):
            raise _SyntaxError(f"unexpected text after the arguments: {rest[reader.pos : reader.pos + 20]!r}")
    except _SyntaxError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return ToolCall(name, arguments)


def _find_call_end(raw: str, pos: int) -> tuple[int, int]:
    """Where the call body starting at `pos` ends: (index of its CALL_END, -1), or (-1, index of a CALL_START
    met first, or -1 at the end of the output) for a call that was never closed. Markers inside a native
    `<|"|>...<|"|>` string are the string's text, not structure."""
    while True:
        found = [(i, mark) for mark in (STR, CALL_END, CALL_START) if (i := raw.find(mark, pos)) >= 0]
        if not found:
            return -1, -1
        i, mark = min(found)
        if mark == CALL_END:
            return i, -1
        if mark == CALL_START:
            return -1, i
        close = raw.find(STR, i + len(STR))
        if close < 0:  # an unclosed string: let the body parser report it if the call itself is closed
            end, next_start = raw.find(CALL_END, i), raw.find(CALL_START, i)
            return (end, -1) if end >= 0 and not 0 <= next_start < end else (-1, next_start)
        pos = close + len(STR)


def _split_native_calls(raw: str) -> tuple[str, list[ToolCall], list[str]]:
    text_parts: list[str] = []
    calls: list[ToolCall] = []
    errors: list[str] = []
    pos = 0
    while True:
        start = raw.find(CALL_START, pos)
        if start < 0:
            text_parts.append(raw[pos:])
            break
        text_parts.append(raw[pos:start])
        body_start = start + len(CALL_START)
        end, next_start = _find_call_end(raw, body_start)
        if end < 0:
            stop = len(raw) if next_start < 0 else next_start
            errors.append(f"a tool call was not closed with {CALL_END} (output cut off?)")
            pos = stop
            continue
        try:
            calls.append(parse_call_body(raw[body_start:end]))
        except ValueError as exc:
            errors.append(str(exc))
        pos = end + len(CALL_END)
    return "".join(text_parts), calls, errors


_FENCE = re.compile(r"```[A-Za-z_-]*[ \t]*\n(.*?)```", re.DOTALL)
_BARE_CALL = re.compile(r"(?<![A-Za-z0-9_])call:[A-Za-z_][A-Za-z0-9_.\-]*\s*\{")


def _call_from_json(obj: Any) -> ToolCall | None:
    """Accept the shapes models print when they write a call as JSON instead of the native form."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name") or obj.get("tool") or obj.get("tool_name")
    arguments = obj.get("arguments", obj.get("args", obj.get("parameters", obj.get("input", {}))))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or not isinstance(arguments, dict):
        return None
    return ToolCall(name, arguments)


def _json_objects(text: str) -> list[tuple[int, int, Any]]:
    """Top-level JSON values that start at a `{` or `[` in text, as (start, end, value)."""
    decoder, found, pos = json.JSONDecoder(), [], 0
    while True:
        candidates = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not candidates:
            return found
        start = min(candidates)
        try:
            value, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            pos = start + 1
            continue
        found.append((start, end, value))
        pos = end


def _recover_text_calls(text: str, known_tools: set[str] | None) -> tuple[str, list[ToolCall], list[str]]:
    """Calls the model printed as plain text: JSON (bare or fenced) or the native body without its markers."""

    def accept(call: ToolCall | None) -> bool:
        return call is not None and (known_tools is None or call.name in known_tools)

    calls: list[ToolCall] = []
    errors: list[str] = []
    spans: list[tuple[int, int]] = []
    for start, end, value in _json_objects(text):
        items = value if isinstance(value, list) else [value]
        parsed = [_call_from_json(item) for item in items]
        if parsed and all(accept(call) for call in parsed):
            calls.extend(call for call in parsed if call is not None)
            spans.append((start, end))
    if not calls:
        for match in _BARE_CALL.finditer(text):
            reader = _ValueReader(text)
            reader.pos = match.end() - 1
            try:
                reader.value()
            except _SyntaxError as exc:
                errors.append(f"call written as text could not be read: {exc}")
                continue
            try:
                call = parse_call_body(text[match.start() : reader.pos])
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if accept(call):
                calls.append(call)
                spans.append((match.start(), reader.pos))
    if not spans:
        return text, calls, errors
    kept, pos = [], 0
    for start, end in sorted(spans):
        kept.append(text[pos:start])
        pos = max(pos, end)
    kept.append(text[pos:])
    remaining = _FENCE.sub(lambda m: "" if not m.group(1).strip() else m.group(0), "".join(kept))
    remaining = re.sub(r"```[A-Za-z_-]*\s*```|<tool_call>\s*</tool_call>|<function_call>\s*</function_call>", "",
                       remaining)
    return remaining, calls, errors


def parse_model_output(raw: str, known_tools: set[str] | None = None) -> ParsedTurn:
    """Split raw model output into text, tool calls and call errors. Never raises.

    Native `<|tool_call>` blocks win; without them, calls printed as JSON (plain or in code fences) or as a
    marker-less `call:NAME{...}` are recovered (only for names in `known_tools` when that is given, so ordinary
    JSON in an answer is not mistaken for a call). Truncated or malformed calls become entries in `errors`.
    """
    try:
        return _parse(raw if isinstance(raw, str) else str(raw), known_tools)
    except Exception as exc:  # last line of defence: model output must never crash the session
        return ParsedTurn(text=str(raw), errors=[f"unreadable output ({type(exc).__name__})"])


def _parse(raw: str, known_tools: set[str] | None) -> ParsedTurn:
    for stop in (RESPONSE_START, TURN_END, EOS):
        cut = raw.find(stop)
        if cut >= 0:
            raw = raw[:cut]
    thought = ""
    while CHANNEL_START in raw:
        start = raw.find(CHANNEL_START)
        end = raw.find(CHANNEL_END, start)
        stop = len(raw) if end < 0 else end + len(CHANNEL_END)
        thought += raw[start + len(CHANNEL_START) : end if end >= 0 else len(raw)]
        raw = raw[:start] + raw[stop:]
    text, calls, errors = _split_native_calls(raw)
    if not calls and not errors:
        text, calls, errors = _recover_text_calls(text, known_tools)
    return ParsedTurn(text=text.strip(), calls=calls, errors=errors, thought=thought.strip())
