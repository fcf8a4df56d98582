"""Our renderer against Google's Gemma 4 chat template, byte for byte, on the agent's conversations.

The template text is not part of the project. With GEMMA_AGENT_TEMPLATE_DIR naming a model directory that ships
it (chat_template.jinja or tokenizer_config.json, e.g. a google/gemma-4-12B-it download), every case is rendered
by it (through our jinja2 environment and through transformers' own renderer) and must equal ours; without it,
ours must equal the expected renderings stated in tests/fixtures/chat_format_expected.json (which the first
kind of run checks against the template too).
"""
import json
import os

import pytest

from agent.chat_format import (
    EMPTY_THOUGHT, TURN_START, assistant_messages, render_conversation, render_tool_call, template_messages,
    template_tools,
)
from agent.chat_template import JinjaFormat, checkpoint_template
from tests.chat_format_cases import AGENT_TOOLS, BASE, CASES, FIXTURE, READ, READ_CALL, READ_RESULT, USER

EXPECTED = json.loads(FIXTURE.read_text(encoding="utf-8"))["expected"]
TEMPLATE_DIR = os.environ.get("GEMMA_AGENT_TEMPLATE_DIR")
needs_template = pytest.mark.skipif(not TEMPLATE_DIR, reason="set GEMMA_AGENT_TEMPLATE_DIR to a directory with "
                                                             "the official Gemma 4 12B chat template")


def render(name: str) -> str:
    messages, tools, thinking, generation = CASES[name]
    return render_conversation(messages, tools, thinking=thinking, add_generation_prompt=generation)


@pytest.fixture(scope="module")
def official():
    found = checkpoint_template(TEMPLATE_DIR)
    assert found is not None, f"no chat template in {TEMPLATE_DIR}"
    return found


def test_there_are_enough_cases_and_each_has_an_expectation():
    assert len(CASES) >= 20 and set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_renders_the_expected_text(name):
    assert render(name) == EXPECTED[name]


@needs_template
@pytest.mark.parametrize("name", sorted(CASES))
def test_official_template_renders_the_same(name, official):
    messages, tools, thinking, generation = CASES[name]
    source, specials = official
    theirs = JinjaFormat(source, **specials)(messages, tools, thinking=thinking, add_generation_prompt=generation)
    assert theirs == render(name)


@needs_template
@pytest.mark.parametrize("name", sorted(CASES))
def test_transformers_apply_chat_template_renders_the_same(name, official):
    chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    messages, tools, thinking, generation = CASES[name]
    source, specials = official
    rendered, _ = chat_template_utils.render_jinja_template(
        [template_messages(messages)], tools=template_tools(tools), chat_template=source,
        add_generation_prompt=generation, enable_thinking=thinking, **specials)
    assert rendered[0] == render(name)


@needs_template
def test_the_live_tool_declarations_render_the_same(official):
    from tools.toolbox import collect_specs

    tools = [spec.declaration() for spec in collect_specs()]
    messages = [{"role": "system", "content": BASE}, USER]
    assert JinjaFormat(official[0], **official[1])(messages, tools) == render_conversation(messages, tools)


def test_empty_schema_parts_are_left_out():
    text = EXPECTED["tool_without_parameters"]
    assert 'declaration:git_status{description:<|"|>Working tree status.<|"|>,parameters:{type:<|"|>OBJECT<|"|>}}' in text
    assert 'declaration:list_branches{description:<|"|>List the git branches.<|"|>}' in text
    assert "properties:{}" not in render_conversation([USER], AGENT_TOOLS)


def test_keys_sort_case_insensitively():
    call = render_tool_call({"name": "f", "arguments": {"b": 1, "Z": 2, "a": 3}})
    assert call == "<|tool_call>call:f{a:3,b:1,Z:2}<tool_call|>"


def test_generation_prompt_has_an_empty_thought_channel_unless_thinking():
    assert render("system_and_user_no_tools").endswith(f"{TURN_START}model\n{EMPTY_THOUGHT}")
    assert render("thinking_first_turn").endswith(f"<turn|>\n{TURN_START}model\n")
    assert render("thinking_first_turn").startswith("<bos><|turn>system\n<|think|>\n")
    assert render("thinking_after_results").endswith("<tool_response|><|channel>thought\n")
    assert render("text_then_call_then_result").endswith("<tool_response|>")


def test_user_after_results_closes_the_model_turn():
    assert "<tool_response|><turn|>\n<|turn>user\nAlso check the docs." in render("user_after_results")


def test_the_models_output_re_renders_verbatim_after_the_dropped_thought_channel():
    """The prefix the KV cache keeps: the previous prompt up to its generation prompt's thought channel, then
    exactly what the model generated (text, then calls), then the new answers."""
    history = [{"role": "system", "content": BASE}, USER]
    before = render_conversation(history, [READ])
    generated = "Let me read it." + render_tool_call(READ_CALL)
    history += [*assistant_messages("Let me read it.", [_call(READ_CALL)]), READ_RESULT]
    after = render_conversation(history, [READ])
    assert before.endswith(EMPTY_THOUGHT)
    assert after.startswith(before[: -len(EMPTY_THOUGHT)] + generated + "<|tool_response>")


def _call(spec):
    from agent.chat_format import ToolCall

    return ToolCall(spec["name"], spec["arguments"])


def test_structured_results_render_as_fields():
    assert ("<|tool_response>response:git_status{ahead:2,branch:<|\"|>main<|\"|>,changed:[<|\"|>a.py<|\"|>,"
            "<|\"|>b.py<|\"|>],Clean:false,upstream:null}<tool_response|>") in render("structured_result")
