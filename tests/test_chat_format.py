"""Gemma 4 native format: rendering, parsing, recovery of text-printed calls, and robustness."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from mlx_model.chat_format import (
    CALL_END,
    CALL_START,
    CHANNEL_END,
    CHANNEL_START,
    EXPECTED_CALL_FORM,
    STOP_STRINGS,
    STR,
    ToolCall,
    parse_call_body,
    parse_model_output,
    render_conversation,
    render_tool_call,
)

TOOLS = [{"name": "read_file", "description": "Read a file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]


def test_render_conversation_has_turns_declarations_calls_and_responses():
    messages = [
        {"role": "system", "content": "You fix code."},
        {"role": "user", "content": "Fix it"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}]},
        {"role": "tool", "name": "read_file", "content": "x = 1"},
    ]
    text = render_conversation(messages, TOOLS)
    assert text == (
        "<bos><|turn>system\nYou fix code."
        '<|tool>declaration:read_file{description:<|"|>Read a file<|"|>,parameters:{'
        'properties:{path:{type:<|"|>STRING<|"|>}},required:[<|"|>path<|"|>],type:<|"|>OBJECT<|"|>}}<tool|><turn|>\n'
        "<|turn>user\nFix it<turn|>\n"
        '<|turn>model\nLooking.<|tool_call>call:read_file{path:<|"|>a.py<|"|>}<tool_call|>'
        '<|tool_response>response:read_file{value:<|"|>x = 1<|"|>}<tool_response|>'
    )


def test_rendering_is_append_only():
    history = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    steps = [
        {"role": "assistant", "content": "", "tool_calls": [{"name": "read_file", "arguments": {"path": "p"}}]},
        {"role": "tool", "name": "read_file", "content": "data"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "again"},
    ]
    previous = render_conversation(history, TOOLS)
    for message in steps:
        history.append(message)
        current = render_conversation(history, TOOLS)
        prompt_without_generation = render_conversation(history, TOOLS, add_generation_prompt=False)
        assert current.startswith(prompt_without_generation)
        if message["role"] == "assistant":  # the model's own output extends the prompt it was given
            assert prompt_without_generation.startswith(previous)
        previous = current


def test_native_call_roundtrip_with_nested_values():
    args = {"path": "a b/c.py", "n": 3, "f": 1.5, "ok": True, "none": None, "list": ["x", 2, {"k": "v,}"}],
            "text": 'quotes " and {braces} and\nnewlines'}
    parsed = parse_model_output("Sure." + render_tool_call(ToolCall("edit_file", args)) + "<turn|>")
    assert parsed.text == "Sure."
    assert parsed.calls == [ToolCall("edit_file", args)]
    assert parsed.errors == []


def test_multiple_calls_and_stop_at_tool_response():
    raw = (f"{CALL_START}call:git_status{{}}{CALL_END}{CALL_START}call:read_file{{path:{STR}x{STR}}}{CALL_END}"
           "<|tool_response>response:bogus")
    parsed = parse_model_output(raw)
    assert [c.name for c in parsed.calls] == ["git_status", "read_file"]


def test_truncated_call_is_an_error_not_an_exception():
    parsed = parse_model_output(f"ok {CALL_START}call:read_file{{path:{STR}src/ap")
    assert parsed.calls == [] and len(parsed.errors) == 1
    assert "not closed" in parsed.errors[0]
    assert EXPECTED_CALL_FORM in parsed.error_message()


def test_malformed_arguments_give_readable_error():
    parsed = parse_model_output(f"{CALL_START}call:read_file{{path: src/app.py}}{CALL_END}")
    assert parsed.calls == []
    assert "read_file" in parsed.errors[0] and "<|\"|>" in parsed.errors[0]


def test_recovers_json_call_in_code_fence_and_plain_json():
    fenced = 'I will read it.\n```json\n{"name": "read_file", "arguments": {"path": "a.py"}}\n```\n'
    parsed = parse_model_output(fenced, known_tools={"read_file"})
    assert parsed.calls == [ToolCall("read_file", {"path": "a.py"})]
    assert parsed.text == "I will read it."
    plain = 'Calling {"function": {"name": "read_file", "arguments": "{\\"path\\": \\"b.py\\"}"}}'
    assert parse_model_output(plain, known_tools={"read_file"}).calls == [ToolCall("read_file", {"path": "b.py"})]


def test_json_that_is_not_a_known_tool_stays_text():
    answer = 'The config is {"name": "prod", "arguments": {}}'
    parsed = parse_model_output(answer, known_tools={"read_file"})
    assert parsed.calls == [] and parsed.text == answer


def test_recovers_marker_less_native_call():
    parsed = parse_model_output(f"call:read_file{{path:{STR}a.py{STR}}}", known_tools={"read_file"})
    assert parsed.calls == [ToolCall("read_file", {"path": "a.py"})]


def test_thought_channel_is_split_off():
    parsed = parse_model_output("<|channel>thought\nhmm<channel|>Answer")
    assert parsed.text == "Answer" and parsed.thought == "thought\nhmm"


def test_parse_call_body_accepts_json_style_keys():
    assert parse_call_body('call:run{"command": "ls -la"}') == ToolCall("run", {"command": "ls -la"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
       st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), json_values, max_size=5))
def test_render_then_parse_roundtrips(name, arguments):
    # Strings containing the string delimiter, a stop marker (generation ends there) or a thought-channel marker
    # cannot occur in real output (each is one special token); skip those. Call markers inside strings are text.
    if any(marker in json.dumps(arguments) for marker in (STR, CHANNEL_START, CHANNEL_END, *STOP_STRINGS)):
        return
    parsed = parse_model_output(render_tool_call(ToolCall(name, arguments)))
    assert parsed.calls == [ToolCall(name, arguments)], parsed.errors


@pytest.mark.parametrize("text", [CALL_START, CALL_END, f"a{CALL_END}b{CALL_START}c"])
def test_markers_inside_string_arguments_stay_text(text):
    call = ToolCall("write_file", {"path": "notes.md", "content": text})
    parsed = parse_model_output(render_tool_call(call) + "after")
    assert parsed.calls == [call] and parsed.errors == [] and parsed.text.strip() == "after"


PIECES = [CALL_START, CALL_END, STR, "call:", "read_file", "{", "}", "[", "]", ":", ",", "path", '"', "```json\n",
          "```", '{"name": "read_file", "arguments": {', "<turn|>", "<|channel>", "<channel|>", "\n", " ", "1", "true"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=40), st.integers(min_value=0))
def test_fuzz_random_and_truncated_outputs_never_raise(pieces, cut):
    raw = "".join(pieces)
    for text in (raw, raw[: cut % (len(raw) + 1)]):
        parsed = parse_model_output(text, known_tools={"read_file"})
        assert isinstance(parsed.text, str)
        assert all(isinstance(call.arguments, dict) for call in parsed.calls)
        parsed.error_message()


def test_recovers_hermes_style_tagged_json_call():
    parsed = parse_model_output('Ok <tool_call>{"name": "read_file", "arguments": {"path": "x"}}</tool_call>',
                                known_tools={"read_file"})
    assert parsed.calls == [ToolCall("read_file", {"path": "x"})] and parsed.text == "Ok"
