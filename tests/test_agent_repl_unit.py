"""REPL pieces without a terminal: approval modes for actions outside the sandbox policy, slash commands."""
import io
import json

import pytest

from agent.backends.replay import ReplayBackend
from agent.config import Config
from agent.repl import Repl
from agent.chat_format import ToolCall
from tests.fixtures.agent.sample_repo import make_sample_repo
from sandbox.workspace import Workspace

S = '<|"|>'
EDIT = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
        f"new:{S}return a + b{S}}}<tool_call|>")


@pytest.fixture
def make_repl(tmp_path):
    repo = make_sample_repo(tmp_path)
    transcript = tmp_path / "t.jsonl"
    transcript.write_text(json.dumps(EDIT) + "\n" + json.dumps("done") + "\n")
    opened = []

    def build(answers=(), **config):
        workspace = Workspace.create(repo)
        opened.append(workspace)
        replies = list(answers)
        out = io.StringIO()
        repl = Repl(Config(**config), ReplayBackend(transcript), workspace, out=out, ask=lambda q: replies.pop(0))
        return repl, out, repo

    yield build
    for workspace in opened:
        workspace.close()


def test_unsandboxed_commands_need_approval(make_repl):
    run = ToolCall("run", {"command": "ls"})
    repl, _, _ = make_repl(sandbox=True)
    assert not repl.needs_approval(run)
    repl, _, _ = make_repl(["n", "y"], sandbox=False, approve="ask")
    assert repl.needs_approval(run) and not repl.approve(run) and repl.approve(run)
    assert make_repl(sandbox=False, approve="auto")[0].approve(run)
    assert not make_repl(sandbox=False, approve="never")[0].approve(run)


def test_apply_asks_then_writes_the_users_tree(make_repl):
    repl, out, repo = make_repl(["n", "y"])
    repl.handle("fix add")
    repl.handle("/apply")
    assert "not applied" in out.getvalue() and "a - b" in (repo / "calc/ops.py").read_text()
    repl.handle("/apply")
    assert "applied to your working tree: calc/ops.py" in out.getvalue()
    assert "a + b" in (repo / "calc/ops.py").read_text()


def test_never_mode_refuses_apply_and_unknown_commands_are_reported(make_repl):
    repl, out, repo = make_repl(approve="never")
    repl.handle("fix add")
    repl.handle("/apply")
    repl.handle("/frobnicate")
    repl.handle("/test")
    text = out.getvalue()
    assert "not applied" in text and "unknown command /frobnicate" in text
    assert "2 passed, 0 failed" in text
    assert repl.handle("/exit") is True


def test_thinking_is_shown_dimmed():
    from agent.repl import Console

    out = io.StringIO()
    console = Console(out)
    console.on_thinking("pondering")
    console.on_text("Answer")
    assert out.getvalue() == "\x1b[2mpondering\x1b[22mAnswer"
