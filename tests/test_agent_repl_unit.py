"""REPL pieces without a terminal: approval modes for actions outside the sandbox policy, slash commands."""
import io
import json

import pytest

from agent.backends.replay import ReplayBackend
from agent.config import Config
from agent.repl import Repl
from mlx_model.chat_format import ToolCall
from tests.fixtures.agent.sample_repo import make_sample_repo
from sandbox.workspace import Workspace

S = '<|"|>'


def edit(old: str, new: str) -> str:
    """A native edit_file call on calc/ops.py."""
    return f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}{old}{S},new:{S}{new}{S}}}<tool_call|>"


EDIT = edit("return a - b", "return a + b")


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


EDIT_MUL = edit("return a * b", "return b * a")


@pytest.fixture
def two_edit_repl(tmp_path):
    repo = make_sample_repo(tmp_path)
    transcript = tmp_path / "two.jsonl"
    transcript.write_text("".join(json.dumps(o) + "\n" for o in (EDIT, "done", EDIT_MUL, "done", "ok")))
    with Workspace.create(repo) as workspace:
        backend = ReplayBackend(transcript)
        seen = []
        complete = backend.complete
        backend.complete = lambda messages, *a, **k: seen.append(messages[-1]["content"]) or complete(messages, *a, **k)
        out = io.StringIO()
        yield Repl(Config(approve="auto"), backend, workspace, out=out, interactive=False), out, repo, seen


def test_apply_twice_to_the_same_file_and_diff_shows_only_what_is_not_applied(two_edit_repl):
    repl, out, repo, _ = two_edit_repl
    repl.handle("fix add")
    repl.handle("/apply")
    assert "return a + b" in (repo / "calc/ops.py").read_text()
    repl.handle("/diff")
    assert out.getvalue().endswith("no changes that are not applied yet\n")
    repl.handle("swap mul")
    repl.handle("/diff")
    assert "+    return b * a" in out.getvalue() and out.getvalue().count("+    return a + b") == 0
    repl.handle("/apply")  # the same file again: the baseline advanced with the first /apply
    text = (repo / "calc/ops.py").read_text()
    assert "return a + b" in text and "return b * a" in text
    assert out.getvalue().count("applied to your working tree: calc/ops.py") == 2


def test_exit_without_a_terminal_saves_unapplied_changes_as_a_patch(two_edit_repl):
    repl, out, repo, _ = two_edit_repl
    repl.handle("fix add")
    assert repl.handle("/exit") is True
    repl.leave()
    saved = [p for p in (repo / ".git/gemma-agent").glob("unapplied-*.patch")]
    assert len(saved) == 1 and f"saved to {saved[0]}" in out.getvalue()
    assert "+    return a + b" in saved[0].read_text()
    assert "return a - b" in (repo / "calc/ops.py").read_text()


def test_undo_tells_the_model_what_was_reverted(two_edit_repl):
    repl, out, repo, seen = two_edit_repl
    repl.handle("fix add")
    repl.handle("/undo")
    assert "undid the last request's changes: calc/ops.py" in out.getvalue()
    repl.handle("swap mul")
    asked = [m for m in seen if isinstance(m, str) and m.endswith("swap mul")]
    assert len(asked) == 1 and "undid your last changes (calc/ops.py)" in asked[0]
