"""Workspace isolation with real git repositories: the user's tree and index stay byte-for-byte unchanged."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from sandbox.workspace import Workspace, WorkspaceError
from tests.sandbox_helpers import git, linux_only, require_sandbox  # noqa: F401

BINARY = bytes(range(256)) * 4


def snapshot(repo: Path) -> dict:
    """Everything the user could notice: file bytes and modes, git status, the index file's hash, HEAD.

    `--no-optional-locks` keeps `git status` itself from refreshing (rewriting) the index.
    """
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if rel.parts[0] == ".git":
            continue
        st = os.lstat(path)
        files[str(rel)] = (st.st_mode, os.readlink(path) if path.is_symlink() else
                           path.read_bytes() if path.is_file() else None)
    index = repo / ".git" / "index"
    return {
        "files": files,
        "status": git(repo, "--no-optional-locks", "status", "--porcelain", "--untracked-files=all"),
        "index": hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else None,
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
    }


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repo with a commit, a staged change, an unstaged change, an untracked and an ignored file."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "a.txt").write_text("a committed\n")
    (repo / "b.txt").write_text("b committed\n")
    (repo / "data.bin").write_bytes(BINARY)
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(repo / "run.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    (repo / "a.txt").write_text("a staged\n")
    git(repo, "add", "a.txt")
    (repo / "a.txt").write_text("a working\n")  # staged and then changed again
    (repo / "b.txt").write_text("b working\n")  # unstaged
    (repo / "new.txt").write_text("untracked\n")
    (repo / "debug.log").write_text("ignored\n")
    return repo


@pytest.mark.parametrize("include, expected", [
    ("head", {"a.txt": "a committed\n", "b.txt": "b committed\n", "new.txt": None}),
    ("index", {"a.txt": "a staged\n", "b.txt": "b committed\n", "new.txt": None}),
    ("working", {"a.txt": "a working\n", "b.txt": "b working\n", "new.txt": "untracked\n"}),
])
def test_create_reflects_include_without_touching_the_user(repo, include, expected):
    before = snapshot(repo)
    with Workspace.create(repo, include=include) as ws:
        assert ws.source == repo.resolve() and ws.path != repo
        for name, content in expected.items():
            path = ws.path / name
            assert (path.read_text() if path.exists() else None) == content, name
        assert not (ws.path / "debug.log").exists()
        assert (ws.path / "data.bin").read_bytes() == BINARY
        assert os.access(ws.path / "run.sh", os.X_OK)
        assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").startswith("gemma-agent/")
        assert git(ws.path, "status", "--porcelain") == ""
    assert snapshot(repo) == before


def test_full_session_never_touches_the_user_until_apply(repo):
    before = snapshot(repo)
    ws = Workspace.create(repo)
    branch = ws.branch
    (ws.path / "b.txt").write_text("b by agent\n")
    first = ws.checkpoint("edit b")
    assert ws.checkpoint("nothing new") == first
    (ws.path / "agent_new.py").write_text("print('new')\n")
    (ws.path / "data.bin").write_bytes(BINARY[::-1])
    (ws.path / "run.sh").unlink()
    ws.checkpoint("more")
    patch = ws.diff()
    assert "agent_new.py" in patch and "GIT binary patch" in patch and "deleted file" in patch
    assert snapshot(repo) == before

    changed = ws.apply()
    assert sorted(changed) == ["agent_new.py", "b.txt", "data.bin", "run.sh"]
    after = snapshot(repo)
    assert after["index"] == before["index"]  # apply writes the working tree only
    assert (repo / "b.txt").read_text() == "b by agent\n"
    assert (repo / "data.bin").read_bytes() == BINARY[::-1]
    assert not (repo / "run.sh").exists()
    assert (repo / "a.txt").read_text() == "a working\n" and (repo / "new.txt").exists()
    ws.close()
    ws.close()  # idempotent
    assert not ws.path.exists()
    assert branch not in git(repo, "branch", "--list")
    assert git(repo, "worktree", "list").count("\n") == 1


def test_checkpoint_and_undo(repo):
    with Workspace.create(repo) as ws:
        assert ws.undo() is False
        (ws.path / "b.txt").write_text("one\n")
        one = ws.checkpoint("one")
        (ws.path / "b.txt").write_text("two\n")
        (ws.path / "extra.txt").write_text("x\n")
        ws.checkpoint("two")
        (ws.path / "b.txt").write_text("uncommitted\n")
        assert ws.undo() is True  # drops the uncommitted edit
        assert (ws.path / "b.txt").read_text() == "two\n"
        assert ws.undo() is True  # back to checkpoint "one"
        assert (ws.path / "b.txt").read_text() == "one\n" and not (ws.path / "extra.txt").exists()
        assert git(ws.path, "rev-parse", "HEAD").strip() == one
        assert ws.undo() is True and (ws.path / "b.txt").read_text() == "b working\n"
        assert ws.undo() is False
        assert ws.diff() == ""


def test_apply_refuses_when_the_user_changed_a_touched_file(repo):
    with Workspace.create(repo) as ws:
        (ws.path / "b.txt").write_text("agent\n")
        (ws.path / "a.txt").write_text("agent a\n")
        (repo / "b.txt").write_text("user edited meanwhile\n")
        before = snapshot(repo)
        with pytest.raises(WorkspaceError, match="b.txt"):
            ws.apply()
        assert snapshot(repo) == before  # a.txt was not applied either


def test_apply_refuses_to_overwrite_uncommitted_changes_the_agent_did_not_see(repo):
    with Workspace.create(repo, include="head") as ws:
        (ws.path / "b.txt").write_text("agent\n")
        before = snapshot(repo)
        with pytest.raises(WorkspaceError, match="uncommitted"):
            ws.apply()
        assert snapshot(repo) == before


def test_apply_refuses_a_new_file_that_now_exists_for_the_user(repo):
    with Workspace.create(repo) as ws:
        (ws.path / "fresh.txt").write_text("agent\n")
        (repo / "fresh.txt").write_text("user\n")
        with pytest.raises(WorkspaceError, match="fresh.txt"):
            ws.apply()
        assert (repo / "fresh.txt").read_text() == "user\n"


def test_non_git_directory_gets_a_copy_with_private_history(tmp_path):
    source = tmp_path / "plain"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "m.py").write_text("x = 1\n")
    (source / "blob.bin").write_bytes(BINARY)
    with Workspace.create(source) as ws:
        assert ws.branch is None and (ws.path / ".git").is_dir()
        (ws.path / "pkg" / "m.py").write_text("x = 2\n")
        (ws.path / "pkg" / "n.py").write_text("y = 1\n")
        (ws.path / "blob.bin").write_bytes(b"\x00\xff" * 10)
        ws.checkpoint("edit")
        assert not (source / "pkg" / "n.py").exists() and (source / "pkg" / "m.py").read_text() == "x = 1\n"
        assert sorted(ws.apply()) == ["blob.bin", "pkg/m.py", "pkg/n.py"]
        assert (source / "pkg" / "m.py").read_text() == "x = 2\n" and (source / "pkg" / "n.py").exists()
        assert (source / "blob.bin").read_bytes() == b"\x00\xff" * 10
        assert not (source / ".git").exists()
    assert not ws.path.exists()


def test_diff_applies_with_git_apply_to_a_fresh_checkout(repo, tmp_path):
    with Workspace.create(repo, include="head") as ws:
        (ws.path / "data.bin").write_bytes(BINARY + b"tail")
        (ws.path / "z.txt").write_text("z\n")
        patch = ws.diff()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "apply", "--binary", "-"], cwd=clone, input=patch.encode(), check=True)
    assert (clone / "data.bin").read_bytes() == BINARY + b"tail" and (clone / "z.txt").read_text() == "z\n"


def test_bad_input_is_refused_clearly(tmp_path, repo):
    with pytest.raises(ValueError, match="include must be one of"):
        Workspace.create(repo, include="everything")
    with pytest.raises(WorkspaceError, match="not an existing directory"):
        Workspace.create(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(WorkspaceError, match="no commits yet"):
        Workspace.create(empty)
    ws = Workspace.create(repo)
    ws.close()
    with pytest.raises(WorkspaceError, match="closed"):
        ws.checkpoint("late")


@linux_only
@pytest.mark.usefixtures("require_sandbox")
def test_sandboxed_command_edits_the_workspace_and_agent_can_checkpoint(repo):
    import sandbox

    before = snapshot(repo)
    with Workspace.create(repo) as ws:
        result = sandbox.run("echo from-sandbox > made.txt && echo more >> b.txt", ws.path, timeout=30)
        assert result.exit_code == 0, result.stderr
        ws.checkpoint("sandbox edit")
        assert git(ws.path, "show", "--stat", "HEAD").count("made.txt") == 1
        assert (ws.path / "made.txt").stat().st_uid == os.stat(ws.path).st_uid
    assert snapshot(repo) == before
