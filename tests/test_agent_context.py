"""Context management: token counts through the backend, pruning old tool outputs, model-written summaries."""
import json

from agent.backends.replay import ReplayBackend
from agent.context import ContextManager
from agent.session import Listener, Session
from tools.toolbox import Toolbox, ToolSettings

S = '<|"|>'


def note(i):
    return f"<|tool_call>call:add_note{{line:{S}{'line %d ' % i * 30}{S}}}<tool_call|>"


class Notices(Listener):
    def __init__(self):
        self.notices = []

    def on_notice(self, message):
        self.notices.append(message)


def make(tmp_path, outputs, limit, reserve=64):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    toolbox = Toolbox(ToolSettings(workspace=tmp_path), modules=["tests.fixtures.agent.demo_tools"])
    listener = Notices()
    context = ContextManager(limit, reserve)
    return Session(ReplayBackend(path), toolbox, "system", listener=listener, context=context), listener


def test_old_tool_outputs_are_pruned_first_and_user_is_told(tmp_path):
    reads = ["<|tool_call>call:read_notes{}<tool_call|>", note(1)] * 4
    session, seen = make(tmp_path, [note(0), *reads, "done"], limit=100_000)
    session.ask("go")
    full = session.context.count(session)
    session.context.limit = full + 64 - 1  # one token too many: pruning must kick in
    assert session.context.fit(session) is None
    assert seen.notices and "old tool outputs pruned" in seen.notices[0]
    contents = [m["content"] for m in session.messages if m["role"] == "tool"]
    assert any(c.startswith("[output pruned") for c in contents[:-4])
    assert not any(c.startswith("[output pruned") for c in contents[-4:])  # the newest outputs stay verbatim
    assert session.context.count(session) < full


def test_older_turns_are_summarized_by_the_model_when_pruning_is_not_enough(tmp_path):
    outputs = [note(i) for i in range(8)] + ["done", "SUMMARY: notes 0-7 were added."]
    session, seen = make(tmp_path, outputs, limit=100_000)
    session.ask("add many notes please")
    session.context.limit = 700
    assert session.context.count(session) > 800  # pruning alone cannot get there: the calls themselves are big
    assert session.context.fit(session) is None, seen.notices
    assert any("summarized" in n for n in seen.notices)
    summary = session.messages[1]
    assert summary["role"] == "user" and "SUMMARY: notes 0-7 were added." in summary["content"]
    assert "add many notes" in summary["content"]  # the original request is kept verbatim
    assert session.messages[2]["role"] != "tool"
    assert session.context.count(session) + 64 <= 700


def test_context_that_cannot_fit_stops_the_session_with_a_reason(tmp_path):
    session, _ = make(tmp_path, ["never used"], limit=50)
    outcome = session.ask("y" * 4000)
    assert outcome.reason == "context_full" and "50-token context" in outcome.detail
