"""Read a model turn back: visible text, thinking, tool calls, and the errors of calls that cannot be read.

The canonical call is `<|tool_call>call:NAME{key:value,...}<tool_call|>`. Shapes that other runtimes have seen
Gemma 4 emit are recovered as calls, and each recovery is noted (`ParsedTurn.recovered`, reported as
`recovered_calls`):
- `call:NAME(key=value, ...)` or `call:NAME(key:value)` (parenthesized, at long prompts: omlx #1846, vLLM #53657);
- a call closed by `<turn|>`, `<|tool_response>` or the next `<|tool_call>` instead of `<tool_call|>`, or by the
  end of the output when its arguments are complete (cut at max_tokens right after them);
- a stray `<tool_call|>` after a call, and a lone `<channel|>` with no thought channel open;
- namespaced names (`mcp:server:tool`, `google:mcp:...:tool`) mapped to the one known tool they end with;
- JSON or single-quoted strings, `"keys"`, Python's True/False/None and trailing commas inside arguments;
- calls printed as text: JSON (plain, fenced, `<tool_call>`-tagged) or `call:NAME{...}` without markers.
A call cut off inside its arguments cannot be recovered: it becomes an error, and the loop answers with the
expected form. Inside a `<|"|>` string every other marker is text; a `<|"|>` inside a string is read as text
when what follows it cannot end a string (the format has no escapes), trying the possible ends in order.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, Iterator

from agent.chat_format import (
    CALL_END, CALL_START, CHANNEL_END, CHANNEL_START, EOS, EXPECTED_CALL_FORM, RESPONSE_START, STR, TURN_END,
    ToolCall,
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")
_KEY = re.compile(r"[A-Za-z0-9_$@][A-Za-z0-9_.$@\-]*")
_WORD = re.compile(r"[^,}\])\s]+")
_STRING_END = re.compile(r"\s*(?:[,}\])]|\Z)")  # what may follow the `<|"|>` that closes a string
_STOPS = (TURN_END, RESPONSE_START, EOS)
_SCAN_MARKERS = (CALL_START, CHANNEL_START, CHANNEL_END, CALL_END, *_STOPS)
_SCALARS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_MAX_DEPTH = 64
_MAX_STEPS = 20_000  # backtracking budget for one call (ambiguous `<|"|>` inside strings)


@dataclass
class ParsedTurn:
    """A model turn: visible text, well-formed calls, errors for calls that could not be read, the thinking
    text, one note per recovered irregularity, and `body`: the output without thoughts, up to its stop marker
    (what a malformed turn is kept as in the history)."""

    text: str
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    thinking: str = ""
    recovered: list[str] = field(default_factory=list)
    body: str = ""

    def error_message(self) -> str:
        """What the loop tells the model about its malformed calls, including the expected form."""
        problems = "; ".join(self.errors)
        return (
            f"error: your tool call could not be parsed ({problems}). "
            f"Call a tool exactly like this, one call per block: {EXPECTED_CALL_FORM}"
        )


class _Failed(Exception):
    pass


class _Reader:
    """Backtracking reader for Gemma 4 values: each `*_at` method yields every (value, end) reading in order of
    preference; the furthest failure is kept for the error message."""

    def __init__(self, text: str, *, greedy: bool = False):
        self.text = text
        self.greedy = greedy  # only the first reading of every value: linear, no branching
        self.steps = 0
        self.failure = (-1, "")
        self.lenient: set[str] = set()  # tolerated irregularities met while reading

    def fail(self, pos: int, message: str) -> None:
        if pos >= self.failure[0]:
            self.failure = (pos, message)

    def tick(self) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _Failed("the arguments are too ambiguous to read (many <|\"|> inside strings)")

    def skip(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in " \t\r\n":
            pos += 1
        return pos

    def value_at(self, pos: int, depth: int) -> Iterator[tuple[Any, int]]:
        pos = self.skip(pos)
        if depth > _MAX_DEPTH:
            self.fail(pos, "arguments are nested too deeply")
            return
        if pos >= len(self.text):
            self.fail(pos, "arguments end early (output cut off?)")
            return
        char = self.text[pos]
        if self.text.startswith(STR, pos):
            yield from self.native_string_at(pos)
        elif char in "\"'":
            yield from self.quoted_at(pos)
        elif char == "{":
            yield from self.entries_at(pos + 1, depth, {}, "}")
        elif char == "[":
            yield from self.entries_at(pos + 1, depth, [], "]")
        else:
            yield from self.scalar_at(pos)

    def native_string_at(self, pos: int) -> Iterator[tuple[str, int]]:
        start = pos + len(STR)
        end = self.text.find(STR, start)
        if end < 0:
            self.fail(len(self.text), f"a string is not closed with {STR} (output cut off?)")
        while end >= 0:
            after = end + len(STR)
            if _STRING_END.match(self.text, after):
                yield self.text[start:end], after
                if self.greedy:
                    return
            end = self.text.find(STR, end + 1)

    def quoted_at(self, pos: int) -> Iterator[tuple[str, int]]:
        quote = self.text[pos]
        if quote == '"':
            try:
                value, end = json.JSONDecoder().raw_decode(self.text, pos)
            except json.JSONDecodeError as exc:
                self.fail(pos, f"bad quoted string: {exc.msg}")
                return
        else:
            match = re.compile(r"'((?:[^'\\]|\\.)*)'", re.DOTALL).match(self.text, pos)
            if not match:
                self.fail(pos, "a quoted string is not closed")
                return
            value, end = re.sub(r"\\(.)", r"\1", match.group(1), flags=re.DOTALL), match.end()
        self.lenient.add("quoted strings")
        yield value, end

    def key_at(self, pos: int) -> tuple[str, int] | None:
        pos = self.skip(pos)
        if self.text.startswith(STR, pos):
            end = self.text.find(STR, pos + len(STR))
            if end >= 0:
                return self.text[pos + len(STR) : end], end + len(STR)
        elif pos < len(self.text) and self.text[pos] in "\"'":
            for value, end in self.quoted_at(pos):
                return value, end
        else:
            match = _KEY.match(self.text, pos)
            if match:
                return match.group(), match.end()
        self.fail(pos, f"expected an argument name at position {pos}")
        return None

    def entries_at(self, pos: int, depth: int, found: Any, close: str) -> Iterator[tuple[Any, int]]:
        """The rest of a list (`found` a list, close ']'), an object (a dict, '}') or a parenthesized argument
        list (a dict, ')'). Values with one reading are taken in a loop; only ambiguous ones branch."""
        keyed = isinstance(found, dict)
        found = dict(found) if keyed else list(found)  # ours to extend in place while values are unambiguous
        while True:
            after_comma, pos = bool(found), self.skip(pos)  # with entries found, a comma led here
            if self.text.startswith(close, pos):
                if after_comma:
                    self.lenient.add("a trailing comma")
                yield found, pos + 1
                return
            name = ""
            if keyed:
                key = self.key_at(pos)
                if key is None:
                    return
                name, pos = key
                pos = self.skip(pos)
                if pos >= len(self.text) or self.text[pos] not in (":=" if close == ")" else ":"):
                    self.fail(pos, f"expected ':' after {name!r}" if pos < len(self.text)
                              else "arguments end early (output cut off?)")
                    return
                pos += 1
            readings = self.value_at(pos, depth + 1)
            options = list(islice(readings, 2))
            for value, end in chain(options, readings):
                end = self.skip(end)
                if len(options) == 1 and self.text.startswith(",", end):
                    if keyed:
                        found[name] = value
                    else:
                        found.append(value)
                    pos = end + 1
                    break
                self.tick()
                more = {**found, name: value} if keyed else [*found, value]
                if self.text.startswith(",", end):
                    yield from self.entries_at(end + 1, depth, more, close)
                elif self.text.startswith(close, end):
                    yield more, end + 1
                else:
                    what = f"the value of {name!r}" if keyed else "a list item"
                    self.fail(end, f"expected ',' or '{close}' after {what}" if end < len(self.text)
                              else "arguments end early (output cut off?)")
            else:
                return

    def scalar_at(self, pos: int) -> Iterator[tuple[Any, int]]:
        match = _WORD.match(self.text, pos)
        word = match.group() if match else ""
        if word in _SCALARS:
            if word[0].isupper():
                self.lenient.add("Python literals")
            yield _SCALARS[word], match.end()
            return
        for kind in (int, float):
            try:
                yield kind(word), match.end()
                return
            except ValueError:
                pass
        self.fail(pos, f"value {word[:30]!r} is not a number, true/false or null; wrap text in {STR}...{STR}")


def _find_outside_strings(raw: str, pos: int, marks: tuple[str, ...]) -> tuple[int, str]:
    """The first of `marks` at or after `pos` that is not inside a `<|"|>` string: (index, mark) or (-1, "")."""
    while True:
        found = [(i, mark) for mark in (STR, *marks) if (i := raw.find(mark, pos)) >= 0]
        if not found:
            return -1, ""
        index, mark = min(found)
        if mark != STR:
            return index, mark
        close = raw.find(STR, index + len(STR))
        if close < 0:
            return -1, ""
        pos = close + len(STR)


def _read_arguments(reader: _Reader, name: re.Match | None, notes: list[str]) -> tuple[Any, int, str] | None:
    """The arguments after the tool name and where the call ends: (arguments, resume position, what closed it
    when not `<tool_call|>`), or None (the reader's `failure` says why). Readings rank: closed by `<tool_call|>`
    with no stray `<tool_call|>` after it; then closed by it with one, or closed otherwise with no `<tool_call|>`
    later; then the rest. The first reading of the best rank wins."""
    raw = reader.text
    if name is None:
        reader.fail(len(raw), "missing tool name after 'call:'")
        return None
    after = reader.skip(name.end())
    opener = raw[after : after + 1]
    if opener in ("{", "("):
        readings = reader.entries_at(after + 1, 0, {}, "}" if opener == "{" else ")")
        note = "parenthesized call" if opener == "(" else ""
    else:
        readings, note = iter([({}, after)]), "call without arguments"
    best: tuple[int, Any, int, str] | None = None  # (rank, arguments, resume position, closed by)
    try:
        for arguments, end in readings:
            end = reader.skip(end)
            if raw.startswith(CALL_END, end):
                closed_by, end = "", end + len(CALL_END)
                next_call = raw.find(CALL_START, end)
                stray = 0 <= raw.find(CALL_END, end) < (next_call if next_call >= 0 else len(raw))
                rank = 1 if stray else 0
            elif end == len(raw) or raw.startswith((*_STOPS, CALL_START), end):
                closed_by = next((m for m in (*_STOPS, CALL_START) if raw.startswith(m, end)), "the end of the output")
                rank = 2 if CALL_END in raw[end:] else 1
            else:
                reader.fail(end, f"unexpected text after the arguments: {raw[end : end + 20]!r}")
                continue
            if best is None or rank < best[0]:
                best = (rank, arguments, end, closed_by)
            if rank == 0 or (reader.greedy and rank == 1 and closed_by):
                break
    except _Failed as exc:
        reader.failure = (len(raw) + 1, str(exc))
    if best is None or (reader.greedy and not (best[0] == 0 or (best[0] == 1 and best[3]))):
        return None  # a greedy pass takes only a clean reading; the backtracking pass looks further
    if note and note not in notes:
        notes.append(note)
    return best[1:]


def _read_call(raw: str, start: int) -> tuple[ToolCall | None, int, str, list[str]]:
    """The call whose `<|tool_call>` is at `start`: (call or None, where scanning resumes, error, recoveries)."""
    notes: list[str] = []
    pos = start + len(CALL_START)
    while pos < len(raw) and raw[pos] in " \t\r\n":
        pos += 1
    if raw.startswith("call:", pos):
        pos += len("call:")
    else:
        notes.append("call without 'call:'")
    match = _NAME.match(raw, pos)
    name = match.group() if match else ""
    for greedy in (True, False):  # the first reading of every string, then every possible end of each
        reader = _Reader(raw, greedy=greedy)
        found = _read_arguments(reader, match, notes)
        if found is not None:
            arguments, closing, closed_by = found
            notes.extend([f"call closed by {closed_by}"] if closed_by else [])
            return ToolCall(name, arguments), closing, "", [*notes, *sorted(reader.lenient)]
    close, _ = _find_outside_strings(raw, start + len(CALL_START), (CALL_END,))
    following, _ = _find_outside_strings(raw, start + len(CALL_START), (CALL_START, *_STOPS))
    detail = reader.failure[1] or "unreadable call"
    if close < 0 or 0 <= following < close:
        error = f"a tool call was not closed with {CALL_END} (output cut off?): {detail}"
        return None, following if following >= 0 else len(raw), f"{name}: {error}" if name else error, notes
    return None, close + len(CALL_END), f"{name}: {detail}" if name else detail, notes


def parse_call_body(body: str) -> ToolCall:
    """One call from the text between its markers (`call:NAME{...}`); raises ValueError with a readable reason."""
    turn = _parse(f"{CALL_START}{body}{CALL_END}", None, False)
    if turn.errors or len(turn.calls) != 1 or turn.text:
        raise ValueError("; ".join(turn.errors) or f"not one call: {body[:40]!r}")
    return turn.calls[0]


def _thought(content: str) -> str:
    return content[len("thought") :].strip() if content.startswith("thought") else content.strip()


def parse_model_output(raw: str, known_tools: set[str] | None = None, *, in_thought: bool = False) -> ParsedTurn:
    """Split raw model output into text, thinking, tool calls and call errors. Never raises.

    `in_thought`: the prompt opened a thought channel, so the output starts inside it. Native calls win; without
    them, calls printed as JSON or as marker-less `call:NAME{...}` are recovered, only for names in
    `known_tools` when that is given (so ordinary JSON in an answer is not mistaken for a call).
    """
    try:
        return _parse(raw if isinstance(raw, str) else str(raw), known_tools, in_thought)
    except Exception as exc:  # last line of defence: model output must never crash the session
        return ParsedTurn(text=str(raw), errors=[f"unreadable output ({type(exc).__name__})"], body=str(raw))


def _parse(raw: str, known_tools: set[str] | None, in_thought: bool) -> ParsedTurn:
    turn = ParsedTurn(text="")
    text: list[str] = []
    body: list[str] = []
    thinking: list[str] = []
    pos = 0
    if in_thought:
        end = raw.find(CHANNEL_END)
        thinking.append((raw if end < 0 else raw[:end]).strip())
        pos = len(raw) if end < 0 else end + len(CHANNEL_END)
    while pos < len(raw):
        found = [(i, mark) for mark in _SCAN_MARKERS if (i := raw.find(mark, pos)) >= 0]
        if not found:
            text.append(raw[pos:])
            body.append(raw[pos:])
            break
        index, mark = min(found)
        text.append(raw[pos:index])
        body.append(raw[pos:index])
        if mark in _STOPS:
            break
        if mark == CHANNEL_START:
            end = raw.find(CHANNEL_END, index)
            thinking.append(_thought(raw[index + len(CHANNEL_START) : end if end >= 0 else len(raw)]))
            pos = len(raw) if end < 0 else end + len(CHANNEL_END)
        elif mark in (CHANNEL_END, CALL_END):
            turn.recovered.append(f"stray {mark} dropped")
            pos = index + len(mark)
        else:
            call, pos, error, notes = _read_call(raw, index)
            body.append(raw[index:pos])
            if call is None:
                turn.errors.append(error)
                continue
            turn.calls.append(call)
            turn.recovered.extend(notes)
    turn.text = "".join(text)
    if not turn.calls and not turn.errors:
        turn.text, turn.calls, turn.errors, printed = _recover_text_calls(turn.text, known_tools)
        turn.recovered.extend(f"call printed as {how}" for how in printed)
    if known_tools:
        turn.calls = [_known_name(call, known_tools, turn.recovered) for call in turn.calls]
    turn.text = turn.text.strip()
    turn.thinking = "\n\n".join(t for t in thinking if t)
    turn.body = "".join(body).strip()
    return turn


def _known_name(call: ToolCall, known_tools: set[str], notes: list[str]) -> ToolCall:
    """A namespaced name (`mcp:server:read_file`) becomes the one known tool it ends with."""
    if call.name in known_tools:
        return call
    matches = [tool for tool in known_tools if re.fullmatch(rf".+[:./]{re.escape(tool)}", call.name)]
    if len(matches) != 1:
        return call
    notes.append(f"namespaced name {call.name} read as {matches[0]}")
    return ToolCall(matches[0], call.arguments)


# ---------------------------------------------------------------------------------------------------- calls as text

_FENCE = re.compile(r"```[A-Za-z_-]*[ \t]*\n(.*?)```", re.DOTALL)
_BARE_CALL = re.compile(r"(?<![A-Za-z0-9_])call:[A-Za-z_][A-Za-z0-9_.:\-]*\s*\{")


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
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not isinstance(arguments, dict):
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


def _recover_text_calls(
    text: str, known_tools: set[str] | None
) -> tuple[str, list[ToolCall], list[str], list[str]]:
    """Calls the model printed as plain text: JSON (bare or fenced) or the native body without its markers.
    Returns (remaining text, calls, errors, how each call was printed)."""

    def accept(call: ToolCall | None) -> bool:
        return call is not None and (known_tools is None or call.name in known_tools)

    calls: list[ToolCall] = []
    errors: list[str] = []
    printed: list[str] = []
    spans: list[tuple[int, int]] = []
    for start, end, value in _json_objects(text):
        items = value if isinstance(value, list) else [value]
        parsed = [_call_from_json(item) for item in items]
        if parsed and all(accept(call) for call in parsed):
            calls.extend(call for call in parsed if call is not None)
            printed.extend("JSON" for _ in parsed)
            spans.append((start, end))
    if not calls:
        for match in _BARE_CALL.finditer(text):
            reader = _Reader(text, greedy=True)
            name = text[match.start() + len("call:") : match.end() - 1].strip()
            try:
                arguments, end = next(reader.entries_at(match.end(), 0, {}, "}"), (None, -1))
            except _Failed as exc:
                arguments, reader.failure = None, (0, str(exc))
            if arguments is None:
                errors.append(f"call written as text could not be read: {reader.failure[1]}")
                continue
            call = ToolCall(name, arguments)
            if accept(call):
                calls.append(call)
                printed.append("text without markers")
                spans.append((match.start(), end))
    if not spans:
        return text, calls, errors, printed
    kept, pos = [], 0
    for start, end in sorted(spans):
        kept.append(text[pos:start])
        pos = max(pos, end)
    kept.append(text[pos:])
    remaining = _FENCE.sub(lambda m: "" if not m.group(1).strip() else m.group(0), "".join(kept))
    remaining = re.sub(r"```[A-Za-z_-]*\s*```|<tool_call>\s*</tool_call>|<function_call>\s*</function_call>", "",
                       remaining)
    return remaining, calls, errors, printed
