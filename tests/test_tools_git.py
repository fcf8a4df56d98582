"""git_diff and git_status on real git repositories."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools.base import ToolError
from tools.editing import edit_file, write_file
from tools.git_tools import git_diff, git_status
from tools.toolbox import ToolSettings


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@e", "GIT_CONFIG_GLOBAL": "/dev/null"}.items():
        monkeypatch.setenv(key, value)
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "app.py").write_text("def main():\n    return 1\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "start")
    return tmp_path


def test_clean_repo(repo):
    assert git_diff(workspace=repo).startswith("no changes against commit")
    assert "working tree clean" in git_status(workspace=repo)


def test_diff_shows_edits_and_new_files_but_not_ignored_ones(repo):
    edit_file("app.py", "return 1", "return 2", workspace=repo)
    write_file("lib/util.py", "X = 1\n", workspace=repo)
    (repo / "debug.log").write_text("noise\n")
    index_before = (repo / ".git" / "index").read_bytes()
    diff = git_diff(workspace=repo)
    assert "-    return 1\n+    return 2" in diff
    assert "new file mode" in diff and "+X = 1" in diff
    assert "debug.log" not in diff
    status = git_status(workspace=repo)
    assert "## main" in status and " M app.py" in status and "?? lib/util.py" in status
    assert (repo / ".git" / "index").read_bytes() == index_before  # the user's index is untouched
    assert git(repo, "status", "--short") == " M app.py\n?? lib/\n"


def test_base_ref_diff_spans_checkpoint_commits(repo):
    start = git(repo, "rev-parse", "HEAD").strip()
    edit_file("app.py", "return 1", "return 2", workspace=repo)
    git(repo, "commit", "-qam", "checkpoint")
    write_file("notes.txt", "n\n", workspace=repo)
    settings = ToolSettings(workspace=repo, base_ref=start)
    diff = git_diff(workspace=repo, settings=settings)
    assert "+    return 2" in diff and "+n" in diff
    assert "+    return 2" not in git_diff(workspace=repo)  # against HEAD the checkpoint is already in
    status = git_status(workspace=repo, settings=settings)
    assert f"changed since {start}" in status and "M\tapp.py" in status and "A\tnotes.txt" in status


def test_diff_is_capped_by_output_limit(repo):
    write_file("big.txt", "".join(f"line {i}\n" for i in range(5000)), workspace=repo)
    diff = git_diff(workspace=repo, settings=ToolSettings(workspace=repo, output_limit=2000))
    assert len(diff) < 2300 and "diff cut at 2,000" in diff


def test_unborn_head_and_errors(tmp_path_factory, repo):
    fresh = tmp_path_factory.mktemp("fresh")
    git(fresh, "init", "-q")
    (fresh / "a.txt").write_text("hello\n")
    assert "+hello" in git_diff(workspace=fresh)
    plain = tmp_path_factory.mktemp("plain")
    with pytest.raises(ToolError, match="not a git repository"):
        git_status(workspace=plain)
    with pytest.raises(ToolError, match="base ref 'nope' is not a commit"):
        git_diff(workspace=repo, settings=ToolSettings(workspace=repo, base_ref="nope"))


def test_without_git_installed_only_the_git_tools_fail(repo):
    script = ("from tools.toolbox import Toolbox, ToolSettings\n"
              "import sys\n"
              "box = Toolbox(ToolSettings(workspace=sys.argv[1]))\n"
              "print(box.call('git_status', {}))\n"
              "print(box.call('read_file', {'path': 'app.py'}))\n")
    env = {"PATH": "/nonexistent", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script, str(repo)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error: git is not available on this machine")
    assert "1\tdef main():" in done.stdout
