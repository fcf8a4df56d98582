"""The git hook end to end: a real `git commit` in a sample repository runs the hook, which runs pytest in a
worktree and a replayed fix; the user's index and working tree must stay byte-identical."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.agent.sample_repo import GIT_ENV, git, make_sample_repo
from agent.cli import main

ROOT = Path(__file__).resolve().parent.parent
S = '<|"|>'
EDIT = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
        f"new:{S}return a + b{S}}}<tool_call|>")


def snapshot(repo):
    """Bytes of the index and of every file outside .git."""
    files = {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return (repo / ".git" / "index").read_bytes(), files


def commit(repo, *extra_env):
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), **dict(extra_env)}
    return subprocess.run(["git", "commit", "-m", "change"], cwd=repo, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def repo(tmp_path):
    repo = make_sample_repo(tmp_path)
    # Make the committed state good, then stage a bad change (mul breaks) with an unstaged edit on top.
    (repo / "calc/ops.py").write_text((repo / "calc/ops.py").read_text().replace("a - b", "a + b"))
    git(repo, "commit", "-qam", "good")
    transcript = tmp_path / "fix.jsonl"
    fix_mul = EDIT.replace("a - b", "a ** b").replace("a + b", "a * b")
    transcript.write_text(json.dumps(fix_mul) + "\n" + json.dumps("Fixed mul.") + "\n")
    (repo / ".gemma-agent.toml").write_text(
        f'backend = "replay"\n[replay]\ntranscript = "{transcript}"\n[sandbox]\nenabled = false\n')
    git(repo, "add", ".gemma-agent.toml")
    git(repo, "commit", "-qm", "config")
    (repo / "calc/ops.py").write_text((repo / "calc/ops.py").read_text().replace("a * b", "a ** b"))
    git(repo, "add", "calc/ops.py")
    (repo / "notes.txt").write_text("unstaged, untracked work\n")
    return repo


def test_hook_blocks_bad_commit_saves_patch_and_leaves_tree_and_index_identical(repo, capsys):
    original_hook = "#!/bin/sh\necho original-hook-ran\n"
    hook_path = repo / ".git/hooks/pre-commit"
    hook_path.write_text(original_hook)
    hook_path.chmod(0o755)
    assert main(["hook", "install", "--repo", str(repo)]) == 0
    assert "kept as" in capsys.readouterr().out
    # `git commit` itself stores the cache-tree in the index before running hooks; store it now so the
    # snapshot measures only what the hook does.
    git(repo, "write-tree")
    before = snapshot(repo)
    head = git(repo, "rev-parse", "HEAD")
    result = commit(repo)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "original-hook-ran" in result.stdout + result.stderr
    assert "commit blocked" in result.stderr
    assert git(repo, "rev-parse", "HEAD") == head
    assert snapshot(repo) == before
    patches = list((repo / ".git/gemma-agent/patches").glob("pre-commit-*.patch"))
    assert len(patches) == 1 and str(patches[0]) in result.stderr
    assert "+    return a * b" in patches[0].read_text().splitlines()
    subprocess.run(["git", "apply", "--check", str(patches[0])], cwd=repo, check=True)

    skipped = commit(repo, ("GEMMA_AGENT_SKIP", "1"))
    assert skipped.returncode == 0, skipped.stderr
    assert main(["hook", "uninstall", "--repo", str(repo)]) == 0
    assert hook_path.read_text() == original_hook
    assert not (repo / ".git/hooks/pre-commit.gemma-agent-chained").exists()


def test_advise_mode_lets_commit_through_and_good_commit_passes(repo, capsys):
    assert main(["hook", "install", "--mode", "advise", "--repo", str(repo)]) == 0
    result = commit(repo)
    assert result.returncode == 0, result.stderr
    assert "proposed patch" in result.stderr
    git(repo, "revert", "--no-edit", "HEAD")  # back to a good state
    (repo / "README").write_text("docs\n")
    git(repo, "add", "README")
    assert main(["hook", "install", "--mode", "block", "--repo", str(repo)]) == 0
    result = commit(repo)
    assert result.returncode == 0 and "tests pass" in result.stderr
    assert main(["hook", "uninstall", "--repo", str(repo)]) == 0
    assert not (repo / ".git/hooks/pre-commit").exists()
    assert main(["hook", "uninstall", "--repo", str(repo)]) == 2


def test_uninstall_refuses_foreign_hook(repo, capsys):
    hook = repo / ".git/hooks/pre-push"
    hook.write_text("#!/bin/sh\nexit 0\n")
    assert main(["hook", "uninstall", "--type", "pre-push", "--repo", str(repo)]) == 2
    assert "not installed by gemma-agent" in capsys.readouterr().err
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"


def test_hook_run_without_weights_blocks_with_instructions(repo, capsys, monkeypatch):
    monkeypatch.delenv("GEMMA_AGENT_MODEL", raising=False)
    (repo / ".gemma-agent.toml").write_text('backend = "mlx"\n[sandbox]\nenabled = false\n')
    assert main(["hook", "run", "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "tests/test_ops.py::test_mul" in err and "gemma-agent convert" in err and "commit blocked" in err
    assert main(["hook", "run", "--mode", "advise", "--repo", str(repo)]) == 0
    monkeypatch.setenv("GEMMA_AGENT_SKIP", "1")
    assert main(["hook", "run", "--repo", str(repo)]) == 0
