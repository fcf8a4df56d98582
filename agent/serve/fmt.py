"""The server's single adapter to the Gemma 4 conversation format (render a conversation, read a call).

Everything format-specific the server needs goes through here, so a change of the renderer/parser touches
only this module.
"""
from __future__ import annotations

from typing import Any

from agent import chat_format as cf
from agent.call_parser import parse_model_output

CALL_START, CALL_END = cf.CALL_START, cf.CALL_END
THOUGHT_START, THOUGHT_END = cf.CHANNEL_START, cf.CHANNEL_END
STRING_DELIMITER = cf.STR
# Generation ends at any of these (end of turn, the model waiting for a tool result, end of sequence).
STOP_STRINGS = tuple(cf.STOP_STRINGS)


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """The prompt text for the next model turn. Messages: {"role": system|user|assistant|tool, "content",
    "tool_calls": [{"name", "arguments"}], "name" (tool)}; tools: [{"name", "description", "parameters"}]."""
    return cf.render_conversation(messages, tools)


def forced_call_prefix(name: str | None) -> str:
    """Model output that commits to a tool call (of `name` when given): appended to the prompt to enforce
    `tool_choice` required / a named function."""
    return f"{CALL_START}call:{name}" + "{" if name else f"{CALL_START}call:"


def parse_call(block: str) -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) of one complete `<|tool_call>...<tool_call|>` block, None when it is malformed."""
    turn = parse_model_output(block)
    if len(turn.calls) != 1 or turn.errors:
        return None
    return turn.calls[0].name, turn.calls[0].arguments


def call_end(text: str) -> int:
    """Index just past the first call-closing marker of `text` (the body of an opened call) that is outside a
    native string, or -1 when the call is not closed yet."""
    inside, pos = False, 0
    while pos < len(text):
        if text.startswith(STRING_DELIMITER, pos):
            inside = not inside
            pos += len(STRING_DELIMITER)
        elif not inside and text.startswith(CALL_END, pos):
            return pos + len(CALL_END)
        else:
            pos += 1
    return -1
