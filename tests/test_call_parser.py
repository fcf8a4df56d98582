"""The tolerant call parser: canonical calls, every irregular shape other runtimes have seen Gemma 4 emit,
thinking, and robustness (property tests)."""
import json
import re

import pytest
from hypothesis import assume, given, settings, strategies as st

from agent.call_parser import parse_model_output
from agent.chat_format import (
    CALL_END, CALL_START, CHANNEL_END, CHANNEL_START, CONTROL_MARKERS, EXPECTED_CALL_FORM, STR, ToolCall,
    render_tool_call,
)

Q = STR  # the string delimiter, shorter in the cases below


def test_canonical_call_with_nested_values_and_text():
    args = {"path": "a b/c.py", "n": 3, "f": 1.5, "ok": True, "none": None, "list": ["x", 2, {"k": "v,}"}],
            "text": 'quotes " and {braces} and\nnewlines'}
    parsed = parse_model_output("Sure." + render_tool_call(ToolCall("edit_file", args)) + "<turn|>")
    assert parsed.text == "Sure." and parsed.calls == [ToolCall("edit_file", args)]
    assert parsed.errors == [] and parsed.recovered == []


def test_several_calls_stop_at_the_tool_response_marker():
    raw = (f"{CALL_START}call:git_status{{}}{CALL_END}{CALL_START}call:read_file{{path:{Q}x{Q}}}{CALL_END}"
           "<|tool_response>response:bogus")
    parsed = parse_model_output(raw)
    assert [c.name for c in parsed.calls] == ["git_status", "read_file"] and parsed.recovered == []


@pytest.mark.parametrize("raw, arguments", [
    (f"{CALL_START}call:run(command:{Q}ls -a{Q}){CALL_END}", {"command": "ls -a"}),  # vLLM #53657
    (f"{CALL_START}call:run(command={Q}ls -a{Q}, timeout=30){CALL_END}", {"command": "ls -a", "timeout": 30}),
    (f"{CALL_START}call:run(command='grep -n \"a, b: {{c}}\" x.py', dry=False){CALL_END}",  # omlx #1846
     {"command": 'grep -n "a, b: {c}" x.py', "dry": False}),
])
def test_parenthesized_calls(raw, arguments):
    parsed = parse_model_output(raw, {"run"})
    assert parsed.calls == [ToolCall("run", arguments)] and parsed.errors == []
    assert "parenthesized call" in parsed.recovered


@pytest.mark.parametrize("closer", ["<turn|>", "<|tool_response>", "<eos>", ""])
def test_call_closed_by_something_else_or_cut_right_after_its_arguments(closer):
    parsed = parse_model_output(f"Reading.{CALL_START}call:read_file{{path:{Q}a.py{Q}}}{closer}")
    assert parsed.calls == [ToolCall("read_file", {"path": "a.py"})] and parsed.errors == []
    assert parsed.text == "Reading." and len(parsed.recovered) == 1 and "closed by" in parsed.recovered[0]


def test_call_closed_by_the_next_call():
    parsed = parse_model_output(f"{CALL_START}call:a{{}}{CALL_START}call:b{{x:1}}{CALL_END}")
    assert parsed.calls == [ToolCall("a", {}), ToolCall("b", {"x": 1})]
    assert parsed.recovered == [f"call closed by {CALL_START}"]


def test_stray_call_end_after_a_call():
    parsed = parse_model_output(f"{CALL_START}call:git_status{{}}{CALL_END}{CALL_END}\nDone")
    assert parsed.calls == [ToolCall("git_status", {})] and parsed.text == "Done"
    assert parsed.recovered == [f"stray {CALL_END} dropped"]


def test_output_cut_inside_a_call_is_an_error_with_the_expected_form():
    parsed = parse_model_output(f"ok {CALL_START}call:read_file{{path:{Q}src/ap")
    assert parsed.calls == [] and len(parsed.errors) == 1 and "not closed" in parsed.errors[0]
    assert EXPECTED_CALL_FORM in parsed.error_message()
    assert parsed.body == f"ok {CALL_START}call:read_file{{path:{Q}src/ap"


@pytest.mark.parametrize("name", ["mcp:tools:read_file", "google:mcp:fs:read_file", "functions.read_file"])
def test_namespaced_names_map_to_the_one_known_tool(name):
    parsed = parse_model_output(f"{CALL_START}call:{name}{{path:{Q}a{Q}}}{CALL_END}", {"read_file", "write_file"})
    assert parsed.calls == [ToolCall("read_file", {"path": "a"})]
    assert parsed.recovered == [f"namespaced name {name} read as read_file"]


def test_namespaced_name_of_a_declared_tool_is_kept():
    parsed = parse_model_output(f"{CALL_START}call:mcp:fs:read{{}}{CALL_END}", {"mcp:fs:read", "read"})
    assert parsed.calls == [ToolCall("mcp:fs:read", {})] and parsed.recovered == []


def test_lone_trailing_channel_end_is_dropped():
    parsed = parse_model_output(f"The answer is 4.{CHANNEL_END}")
    assert parsed.text == "The answer is 4." and parsed.thinking == ""
    assert parsed.recovered == [f"stray {CHANNEL_END} dropped"]


def test_thinking_is_separated_from_text():
    parsed = parse_model_output(f"{CHANNEL_START}thought\nhmm, a minus{CHANNEL_END}Answer")
    assert parsed.text == "Answer" and parsed.thinking == "hmm, a minus" and parsed.body == "Answer"


def test_output_that_starts_inside_an_opened_thought_channel():
    raw = f"the bug is a minus{CHANNEL_END}Fixing.{CALL_START}call:git_diff{{}}{CALL_END}"
    parsed = parse_model_output(raw, in_thought=True)
    assert parsed.thinking == "the bug is a minus" and parsed.text == "Fixing."
    assert parsed.calls == [ToolCall("git_diff", {})]
    cut = parse_model_output("still thinking when max_tokens hit", in_thought=True)
    assert cut.thinking == "still thinking when max_tokens hit" and cut.text == "" and not cut.calls


def test_lenient_argument_syntax_is_read_and_noted():
    raw = f'{CALL_START}call:run{{"command": "ls -la", "all": True, }}{CALL_END}'
    parsed = parse_model_output(raw)
    assert parsed.calls == [ToolCall("run", {"command": "ls -la", "all": True})]
    assert {"quoted strings", "Python literals", "a trailing comma"} <= set(parsed.recovered)


def test_malformed_arguments_give_a_readable_error():
    parsed = parse_model_output(f"{CALL_START}call:read_file{{path: src/app.py}}{CALL_END}")
    assert parsed.calls == [] and "read_file" in parsed.errors[0] and Q in parsed.errors[0]


def test_calls_printed_as_json_are_recovered_for_known_tools():
    fenced = 'I will read it.\n```json\n{"name": "read_file", "arguments": {"path": "a.py"}}\n```\n'
    parsed = parse_model_output(fenced, known_tools={"read_file"})
    assert parsed.calls == [ToolCall("read_file", {"path": "a.py"})] and parsed.text == "I will read it."
    assert parsed.recovered == ["call printed as JSON"]
    plain = 'Calling {"function": {"name": "read_file", "arguments": "{\\"path\\": \\"b.py\\"}"}}'
    assert parse_model_output(plain, known_tools={"read_file"}).calls == [ToolCall("read_file", {"path": "b.py"})]
    tagged = parse_model_output('Ok <tool_call>{"name": "read_file", "arguments": {"path": "x"}}</tool_call>',
                                known_tools={"read_file"})
    assert tagged.calls == [ToolCall("read_file", {"path": "x"})] and tagged.text == "Ok"


def test_json_that_is_not_a_known_tool_stays_text():
    answer = 'The config is {"name": "prod", "arguments": {}}'
    parsed = parse_model_output(answer, known_tools={"read_file"})
    assert parsed.calls == [] and parsed.text == answer and parsed.recovered == []


def test_marker_less_native_call_is_recovered():
    parsed = parse_model_output(f"call:read_file{{path:{Q}a.py{Q}}}", known_tools={"read_file"})
    assert parsed.calls == [ToolCall("read_file", {"path": "a.py"})]
    assert parsed.recovered == ["call printed as text without markers"]


@pytest.mark.parametrize("text", [CALL_START, CALL_END, "<turn|>", "<|tool_response>", "<eos>", CHANNEL_START,
                                  f"a{CALL_END}b{CALL_START}c", f"x{Q}y", f"{Q}}}", f"end{Q}"])
def test_markers_inside_string_arguments_stay_text(text):
    call = ToolCall("write_file", {"path": "notes.md", "content": text})
    parsed = parse_model_output(render_tool_call(call) + "after")
    assert parsed.calls == [call] and parsed.errors == [] and parsed.text == "after"


# ---------------------------------------------------------------------------------------------------- properties

MARKERS = [m for m in CONTROL_MARKERS if m != STR]
marked_text = st.lists(st.sampled_from(MARKERS) | st.text(max_size=8), max_size=6).map("".join)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | marked_text)


def json_values(strings):
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | strings,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=12)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@settings(max_examples=400, deadline=None)
@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
       st.dictionaries(keys, json_values(marked_text), max_size=5))
def test_render_then_parse_is_the_identity_with_every_control_marker_in_strings(name, arguments):
    call = ToolCall(name, arguments)
    parsed = parse_model_output(render_tool_call(call), {name})
    assert parsed.calls == [call] and parsed.errors == [] and parsed.recovered == []


with_delimiter = st.lists(st.sampled_from([*CONTROL_MARKERS, f"{STR},", f"{STR}}}", f"{STR}]"])
                          | st.text(max_size=8), max_size=6).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, json_values(with_delimiter), min_size=1, max_size=4))
def test_string_delimiter_inside_strings(arguments):
    """The format cannot escape `<|"|>`, so two values can render alike; the parser returns one that renders to
    the same text, and the original whenever no `<|"|>` inside a string could end it."""
    call = ToolCall("write_file", arguments)
    rendered = render_tool_call(call)
    parsed = parse_model_output(rendered)
    assume(not any("too ambiguous" in error for error in parsed.errors))
    assert parsed.errors == [] and len(parsed.calls) == 1
    assert render_tool_call(parsed.calls[0]) == rendered
    ambiguous = any(re.match(r"\s*[,}\])]", text[i + len(STR):])
                    for text in _strings(arguments) for i in [m.start() for m in re.finditer(re.escape(STR), text)])
    if not ambiguous:
        assert parsed.calls == [call]


PIECES = [CALL_START, CALL_END, STR, "call:", "read_file", "{", "}", "(", ")", "=", "[", "]", ":", ",", "path", '"',
          "'", "```json\n", "```", '{"name": "read_file", "arguments": {', "<turn|>", CHANNEL_START, CHANNEL_END,
          "\n", " ", "1", "true", "mcp:x:"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=40), st.integers(min_value=0),
       st.booleans())
def test_fuzz_random_and_truncated_outputs_never_raise(pieces, cut, in_thought):
    raw = "".join(pieces)
    for text in (raw, raw[: cut % (len(raw) + 1)]):
        parsed = parse_model_output(text, known_tools={"read_file"}, in_thought=in_thought)
        assert isinstance(parsed.text, str) and isinstance(parsed.thinking, str)
        assert all(isinstance(call.arguments, dict) for call in parsed.calls)
        assert not any(error.startswith("unreadable output") for error in parsed.errors), parsed.errors
        parsed.error_message()


def test_recoveries_are_json_serializable_notes():
    parsed = parse_model_output(f"{CALL_START}call:x:read_file(path={Q}a{Q})<turn|>", {"read_file"})
    assert json.loads(json.dumps(parsed.recovered)) == parsed.recovered and len(parsed.recovered) == 3


def test_long_calls_parse_without_deep_recursion():
    call = ToolCall("write_file", {"lines": [f"line {i}" for i in range(5000)], "ids": list(range(5000)),
                                   "meta": {f"k{i}": str(i) for i in range(2000)}})
    for raw in (render_tool_call(call), render_tool_call(call).replace(CALL_END, "<turn|>")):
        parsed = parse_model_output(raw)
        assert parsed.calls == [call] and parsed.errors == []


def test_parse_call_body_and_the_format_module_exports():
    from agent import chat_format

    assert chat_format.parse_call_body('call:run{"command": "ls -la"}') == ToolCall("run", {"command": "ls -la"})
    with pytest.raises(ValueError, match="not a number"):
        chat_format.parse_call_body("call:run{command: ls}")
    assert chat_format.parse_model_output is parse_model_output
