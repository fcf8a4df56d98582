"""The agent loop driven by the replay backend (the test double for a model) with real tools on a tmp dir."""
import json

import pytest

from agent.backends.record import RecordingBackend
from agent.backends.replay import ReplayBackend
from agent.session import Budget, Listener, Session
from tools.toolbox import Toolbox, ToolSettings

S = '<|"|>'


def call(name, **args):
    body = ",".join(f"{k}:{S}{v}{S}" for k, v in args.items())
    return f"<|tool_call>call:{name}{{{body}}}<tool_call|>"


def transcript(tmp_path, outputs):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return path


class Collect(Listener):
    def __init__(self):
        self.text, self.calls, self.notices = "", [], []

    def on_text(self, text):
        self.text += text

    def on_tool_call(self, c):
        self.calls.append(c.name)

    def on_notice(self, message):
        self.notices.append(message)


def make_session(tmp_path, outputs, **kwargs):
    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=["tests.fixtures.agent.demo_tools"])
    listener = Collect()
    session = Session(ReplayBackend(transcript(tmp_path, outputs)), toolbox, "system", listener=listener, **kwargs)
    return session, listener


def test_tool_calls_run_and_results_are_appended(tmp_path):
    session, seen = make_session(tmp_path, [
        "Adding." + call("add_note", line="hello"),
        call("read_notes"),
        "All done.<turn|>",
    ])
    outcome = session.ask("write a note")
    assert outcome.reason == "finished" and outcome.steps == 3
    assert (tmp_path / "notes.txt").read_text() == "hello\n"
    assert seen.calls == ["add_note", "read_notes"]
    assert seen.text == "Adding.All done."  # call markup is not shown
    tool_results = [m["content"] for m in session.messages if m["role"] == "tool"]
    assert tool_results == ["notes.txt now has 1 line(s)", "hello\n"]


def test_malformed_call_is_reported_with_expected_form_then_recovers(tmp_path):
    session, seen = make_session(tmp_path, [
        "<|tool_call>call:add_note{line: unquoted}<tool_call|>",
        call("add_note", line="fixed"),
        "ok",
    ])
    assert session.ask("note").reason == "finished"
    error = session.messages[3]
    assert error["role"] == "user" and "<|tool_call>call:read_file{path:" in error["content"]
    assert (tmp_path / "notes.txt").read_text() == "fixed\n"
    assert seen.notices


def test_call_printed_as_json_in_fence_is_executed(tmp_path):
    session, _ = make_session(tmp_path, [
        '```json\n{"name": "add_note", "arguments": {"line": "from json"}}\n```', "done"])
    assert session.ask("note").reason == "finished"
    assert (tmp_path / "notes.txt").read_text() == "from json\n"


def test_unknown_tool_and_bad_arguments_come_back_as_errors(tmp_path):
    session, _ = make_session(tmp_path, [call("delete_everything"), call("add_note", nope="x"), "ok"])
    assert session.ask("x").reason == "finished"
    results = [m["content"] for m in session.messages if m["role"] == "tool"]
    assert results[0].startswith("error: there is no tool named 'delete_everything'")
    assert results[1].startswith("error: unknown argument")


def test_repeated_call_is_flagged_then_doom_loop_ends_session(tmp_path):
    session, _ = make_session(tmp_path, [call("read_notes")] * 10)
    outcome = session.ask("loop")
    assert outcome.reason == "doom_loop" and "5 times" in outcome.detail
    results = [m["content"] for m in session.messages if m["role"] == "tool"]
    assert "note:" not in results[1] and "3 times in a row" in results[2]


def test_repeated_malformed_turns_end_session(tmp_path):
    session, _ = make_session(tmp_path, ["<|tool_call>call:read_notes{"] * 10)
    outcome = session.ask("x")
    assert outcome.reason == "doom_loop" and "malformed" in outcome.detail


def test_step_budget_and_exhausted_transcript(tmp_path):
    session, _ = make_session(tmp_path, [call("add_note", line=str(i)) for i in range(10)], budget=Budget(max_steps=3))
    outcome = session.ask("x")
    assert outcome.reason == "max_steps" and outcome.steps == 3
    session, _ = make_session(tmp_path, [call("read_notes")])
    assert session.ask("x").reason == "backend_error"


def test_denied_action_is_not_run(tmp_path):
    session, _ = make_session(tmp_path, [call("add_note", line="x"), "ok"],
                              needs_approval=lambda c: c.name == "add_note", approve=lambda c: False)
    session.ask("x")
    assert not (tmp_path / "notes.txt").exists()
    assert "denied" in [m for m in session.messages if m["role"] == "tool"][0]["content"]


def test_record_then_replay_reproduces_the_session(tmp_path):
    outputs = ["Hi " + call("add_note", line="a"), "bye"]
    recorded = tmp_path / "rec" / "out.jsonl"
    backend = RecordingBackend(ReplayBackend(transcript(tmp_path, outputs)), recorded)
    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=["tests.fixtures.agent.demo_tools"])
    Session(backend, toolbox, "s").ask("go")
    assert [json.loads(line) for line in recorded.read_text().splitlines()] == outputs


def test_replay_rejects_bad_transcript(tmp_path):
    from agent.backends import BackendUnavailable
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"not": "a string"}\n')
    with pytest.raises(BackendUnavailable, match="bad.jsonl:2"):
        ReplayBackend(bad)


def test_streamed_text_hides_markup_split_across_chunks():
    from agent.stream import VisibleText
    out = []
    stream = VisibleText(out.append)
    raw = "abc<|tool_call>call:x{a:<|\"|>v<|\"|>}<tool_call|>def<turn|>ignored"
    for i in range(len(raw)):
        stream.feed(raw[i])
    stream.flush()
    assert "".join(out) == "abcdef"


def test_malformed_turn_is_kept_without_its_stop_marker(tmp_path):
    from agent.chat_format import render_conversation
    session, _ = make_session(tmp_path, ["<|tool_call>call:add_note{line: x}<tool_call|><turn|>", "ok"])
    session.ask("x")
    assert session.messages[2] == {"role": "assistant", "content": "<|tool_call>call:add_note{line: x}<tool_call|>"}
    assert "<turn|><turn|>" not in render_conversation(session.messages)


FRAGMENTS = ["<|tool_call>", "<tool_call|>", "call:", "add_note", "read_notes", "{", "}", "line:", S, "x", ",",
             '{"name": "add_note", "arguments": {"line": "j"}}', "```json\n", "```", "<turn|>", "<|tool_response>", "\n"]


def test_fuzzed_model_outputs_never_crash_the_session(tmp_path):
    from hypothesis import HealthCheck, given, settings, strategies as st

    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=["tests.fixtures.agent.demo_tools"])
    outputs_strategy = st.lists(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=25)
                                .map("".join), min_size=1, max_size=6)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(outputs_strategy)
    def run(outputs):
        outcome = Session(ReplayBackend(transcript(tmp_path, outputs)), toolbox, "s",
                          budget=Budget(max_steps=8)).ask("go")
        assert outcome.reason in {"finished", "max_steps", "doom_loop", "backend_error"}

    run()


def test_history_keeps_text_then_calls_and_never_thinking(tmp_path):
    from agent.chat_format import render_conversation

    thinking = Collect()
    thinking.on_thinking = lambda text: setattr(thinking, "thought", getattr(thinking, "thought", "") + text)
    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=["tests.fixtures.agent.demo_tools"])
    backend = ReplayBackend(transcript(tmp_path, [
        "<|channel>thought\nfirst note it<channel|>Adding." + call("add_note", line="a"),
        "the note is there<channel|>Done.",  # thinking mode: after tool results the prompt opens the channel
    ]), thinking=True)
    session = Session(backend, toolbox, "system", listener=thinking)
    assert session.ask("note a").reason == "finished"
    assert session.messages[2:] == [
        {"role": "assistant", "content": "Adding."},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "add_note", "arguments": {"line": "a"}}]},
        {"role": "tool", "name": "add_note", "content": "notes.txt now has 1 line(s)"},
        {"role": "assistant", "content": "Done."},
    ]
    assert thinking.thought == "first note itthe note is there" and thinking.text == "Adding.Done."
    assert "note it" not in render_conversation(session.messages, thinking=True)


def test_recovered_call_shapes_are_counted(tmp_path):
    session, seen = make_session(tmp_path, [
        f"<|tool_call>call:demo:add_note(line={S}x{S})<turn|>",  # parenthesized, namespaced, closed by <turn|>
        call("read_notes") + "<tool_call|>",  # a stray closer
        "ok",
    ])
    assert session.ask("x").reason == "finished"
    assert seen.calls == ["add_note", "read_notes"] and session.usage.recovered_calls == 4
