"""Agent conversations for the exact-format tests: every shape the agent builds, each rendered by our renderer and
(when GEMMA_AGENT_TEMPLATE_DIR names a directory with the official template) by Google's chat template.
Their expected renderings are in tests/fixtures/chat_format_expected.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "chat_format_expected.json"
# The agent's tool declarations as of this fixture (tools.toolbox.collect_specs; the live ones are checked against
# the official template in test_chat_format_exact.py), so later tool changes do not invalidate the expectations.
AGENT_TOOLS: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))["agent_tools"]
BASE = ("You are gemma-agent, a coding agent working in a git repository on the user's machine.\n"
        "Use the tools to read, search, edit and test the code; do not guess file contents, read them first.")

READ = {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string", "description": "Relative path."},
                                     "start_line": {"type": "integer"}}, "required": ["path"]}}
STATUS = {"name": "git_status", "description": "Working tree status.",
          "parameters": {"type": "object", "properties": {}, "required": []}}
# An MCP-style tool: nested objects, arrays of objects and of strings, enums, nullable, optional vs required,
# upper-case keys, a JSON-schema type list, extra schema keys, an object without properties.
MCP = {"name": "mcp:tracker:create_issue", "description": "Create an issue in the tracker.", "parameters": {
    "type": "object",
    "properties": {
        "title": {"type": "string", "description": "One line."},
        "Body": {"type": "string", "description": "Markdown body with \"quotes\" and {braces}."},
        "priority": {"type": "string", "enum": ["low", "normal", "high"], "description": "How urgent."},
        "labels": {"type": "array", "items": {"type": "string", "enum": ["bug", "docs"]}},
        "assignee": {"type": "string", "nullable": True},
        "estimate": {"type": "number", "minimum": 0, "default": 1.5},
        "links": {"type": "array", "description": "Related items.", "items": {
            "type": "object", "properties": {"url": {"type": "string"}, "kind": {"type": "string"}},
            "required": ["url"]}},
        "meta": {"type": "object", "properties": {
            "source": {"type": "string"},
            "counts": {"type": "object", "properties": {"seen": {"type": "integer"}}, "required": ["seen"]}}},
        "extra": {"type": "object", "additionalProperties": {"type": "string"}},
        "due": {"type": ["string", "null"], "description": "ISO date or null."},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    },
    "required": ["title", "priority"],
}}
NO_PARAMS = {"name": "list_branches", "description": "List the git branches."}

TEXT = 'He said "hi" {and} left.\nNext line: ünïcode ✓, tab\there, backslash \\ and <b>html</b>.'


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def asked(*messages: dict[str, Any], system: str = BASE) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, *messages]


USER = {"role": "user", "content": "The test tests/test_calc.py::test_add fails. Fix it."}
READ_CALL = call("read_file", path="src/calc.py")
READ_RESULT = {"role": "tool", "name": "read_file", "content": "def add(a, b):\n    return a - b\n"}
EDIT_CALL = call("edit_file", path="src/calc.py", old="return a - b", new="return a + b")
EDIT_RESULT = {"role": "tool", "name": "edit_file", "content": "edited src/calc.py (1 replacement)"}


def model(text: str = "", *calls: dict[str, Any]) -> list[dict[str, Any]]:
    """A model turn as the agent records it: its text, then its calls (agent.chat_format.assistant_messages)."""
    messages = [{"role": "assistant", "content": text}] if text or not calls else []
    if calls:
        messages.append({"role": "assistant", "content": "", "tool_calls": list(calls)})
    return messages


# name -> (messages, tools, thinking, add_generation_prompt)
CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None, bool, bool]] = {
    "system_and_user_no_tools": (asked(USER), None, False, True),
    "user_only": ([USER], None, False, True),
    "agent_tools_first_turn": (asked(USER), AGENT_TOOLS, False, True),
    "tool_without_parameters": (asked(USER), [NO_PARAMS, STATUS], False, True),
    "mcp_schema_features": (asked(USER), [MCP, READ], False, True),
    "tools_without_system": ([USER], [READ], False, True),
    "text_then_call_then_result": (asked(USER, *model("Let me read it.", READ_CALL), READ_RESULT), [READ], False,
                                   True),
    "call_without_text": (asked(USER, *model("", READ_CALL), READ_RESULT), [READ], False, True),
    "several_calls_and_results": (
        asked(USER, *model("Two things.", READ_CALL, call("git_status")), READ_RESULT,
              {"role": "tool", "name": "git_status", "content": "clean"}), [READ, STATUS], False, True),
    "multi_step_continuation": (
        asked(USER, *model("Reading.", READ_CALL), READ_RESULT, *model("Found it: a minus.", EDIT_CALL),
              EDIT_RESULT), AGENT_TOOLS, False, True),
    "final_answer_after_results": (
        asked(USER, *model("", READ_CALL), READ_RESULT, *model("", EDIT_CALL), EDIT_RESULT,
              *model("Fixed: add() subtracted; it adds now.")), AGENT_TOOLS, False, True),
    "user_after_results": (
        asked(USER, *model("", READ_CALL), READ_RESULT, {"role": "user", "content": "Also check the docs."}),
        [READ], False, True),
    "second_request_after_answer": (
        asked(USER, *model("", READ_CALL), READ_RESULT, *model("Done."),
              {"role": "user", "content": "Now run the tests."}), AGENT_TOOLS, False, True),
    "structured_result": (
        asked(USER, *model("", call("git_status")),
              {"role": "tool", "name": "git_status", "content": {"branch": "main", "Clean": False,
                                                                "changed": ["a.py", "b.py"], "ahead": 2,
                                                                "upstream": None}}), [STATUS], False, True),
    "mixed_text_and_structured_results": (
        asked(USER, *model("", READ_CALL, call("git_status")), READ_RESULT,
              {"role": "tool", "name": "git_status", "content": {"clean": True}}), [READ, STATUS], False, True),
    "quotes_newlines_braces_unicode": (
        asked({"role": "user", "content": TEXT}, *model(TEXT, call("write_file", path="notes/ü.md", content=TEXT)),
              {"role": "tool", "name": "write_file", "content": TEXT}), AGENT_TOOLS, False, True),
    "argument_value_kinds": (
        asked(USER, *model("", call("mcp:tracker:create_issue", title="Crash", priority="high", Body="x",
                                    labels=["bug"], assignee=None, estimate=2.5, links=[{"url": "u", "kind": "k"}],
                                    meta={"source": "ci", "counts": {"seen": 3}, "Zeta": True}, due="",
                                    matrix=[[1, -2], []], extra={}, negative=-7, big=12345678901234567890,
                                    tiny=1e-07)),
              {"role": "tool", "name": "mcp:tracker:create_issue", "content": "created #12"}), [MCP], False, True),
    "thinking_first_turn": (asked(USER), AGENT_TOOLS, True, True),
    "thinking_after_results": (asked(USER, *model("", READ_CALL), READ_RESULT), [READ], True, True),
    "thinking_without_system_or_tools": ([USER], None, True, True),
    "thinking_user_after_answer": (
        asked(USER, *model("", READ_CALL), READ_RESULT, *model("It subtracts."),
              {"role": "user", "content": "Fix it then."}), [READ], True, True),
    "malformed_turn_kept_raw": (
        asked(USER, {"role": "assistant", "content": '<|tool_call>call:read_file{path: src/calc.py}<tool_call|>'},
              {"role": "user", "content": "error: your tool call could not be parsed (read_file: value 'src/calc.py'"
                                          " is not a number, true/false or null; wrap text in <|\"|>...<|\"|>)."}),
        [READ], False, True),
    "past_thoughts_are_stripped": (
        asked(USER, {"role": "assistant", "content": "<|channel>thought\nhmm, subtraction<channel|>It subtracts."},
              {"role": "user", "content": "ok"}), None, False, True),
    "whitespace_is_trimmed": (
        asked({"role": "user", "content": "\n\n  spaced request \t\n"}, *model("  answer with spaces  \n")),
        None, False, True, ),
    "cancelled_calls_answered": (
        asked(USER, *model("", READ_CALL, EDIT_CALL),
              {"role": "tool", "name": "read_file", "content": "error: cancelled by the user"},
              {"role": "tool", "name": "edit_file", "content": "error: cancelled by the user"},
              {"role": "user", "content": "Stop and explain."}), AGENT_TOOLS, False, True),
    "summary_after_compaction": (
        asked({"role": "user", "content": "Earlier turns were summarized to fit the context.\nOriginal request:\n"
                                          "Fix test_add.\n\nSummary:\nadd() subtracts."},
              *model("", EDIT_CALL), EDIT_RESULT), AGENT_TOOLS, False, True),
    "summary_request_closes_model_turn": (
        asked(USER, *model("", READ_CALL), READ_RESULT, {"role": "assistant", "content": ""},
              {"role": "user", "content": "Summarize the conversation so far."}), [READ], False, True),
    "history_without_generation_prompt": (
        asked(USER, *model("Reading.", READ_CALL), READ_RESULT, *model("Done.")), [READ], False, False),
    "empty_system_prompt": (asked(USER, system=""), [READ], False, True),
}
