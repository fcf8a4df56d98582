"""Every setup failure of `fix`, `hook run` and the REPL: one actionable line, exit code 2 (setup errors), no
traceback, and nothing lost (the user's tree, index and branches unchanged; the REPL keeps its changes)."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Config
from tests.fixtures.agent.sample_repo import git, make_sample_repo
from tools.shell import parse_pytest_output, summary_id

ROOT = Path(__file__).resolve().parent.parent
S = '<|"|>'
EDIT = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
        f"new:{S}return a + b{S}}}<tool_call|>")


@pytest.fixture
def repo(tmp_path):
    return make_sample_repo(tmp_path)


def transcript(tmp_path: Path, *outputs: str, name: str = "t.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return str(path)


def state(repo: Path) -> tuple:
    files = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return (repo / ".git/index").read_bytes(), files, git(repo, "branch", "--list"), git(repo, "worktree", "list")


def one_error_line(err: str) -> str:
    """The single `gemma-agent: error:` line; fails on a traceback or an error spread over several lines."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("gemma-agent: error:")]
    assert len(errors) == 1, err
    index = err.splitlines().index(errors[0])
    assert index == len(err.splitlines()) - 1, err  # nothing follows it
    return errors[0]


def fails_with(capsys, argv: list[str], *words: str) -> str:
    code = main(argv)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2, line
    for word in words:
        assert word in line
    return line


def no_bwrap_path(tmp_path: Path) -> str:
    """A PATH with git and sh but without bubblewrap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        os.symlink(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip(), bin_dir / tool)
    return str(bin_dir)


def test_no_bubblewrap_fix_and_hook_say_so_in_one_line(repo, tmp_path, capsys, monkeypatch):
    before = state(repo)
    monkeypatch.setenv("PATH", no_bwrap_path(tmp_path))
    fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--replay", os.devnull],
               "bubblewrap", "--no-sandbox")
    fails_with(capsys, ["hook", "run", "--repo", str(repo), "--replay", os.devnull], "bubblewrap",
               "[sandbox] enabled = false")
    assert state(repo) == before


def test_no_bubblewrap_repl_test_keeps_the_session_and_its_changes(repo, tmp_path, monkeypatch):
    from agent.backends.replay import ReplayBackend
    from agent.repl import Repl
    from sandbox.workspace import Workspace

    with Workspace.create(repo) as workspace:
        out = io.StringIO()
        repl = Repl(Config(), ReplayBackend(transcript(tmp_path, EDIT, "done")), workspace, out=out,
                    interactive=False)
        repl.handle("fix add")
        monkeypatch.setenv("PATH", no_bwrap_path(tmp_path))
        assert repl.handle("/test") is False
        assert "cannot run the tests" in out.getvalue() and "bubblewrap" in out.getvalue()
        assert "+    return a + b" in workspace.diff()


def test_repository_without_commits(tmp_path, capsys):
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    fails_with(capsys, ["fix", "test_a.py::test_x", "--repo", str(repo), "--no-sandbox", "--replay", os.devnull],
               "no commits yet")
    assert (repo / "a.py").read_text() == "x = 1\n"


def test_patch_of_a_non_utf8_file_is_written_as_bytes(repo, tmp_path, capsys):
    ops = repo / "calc/ops.py"
    ops.write_bytes(ops.read_bytes().replace(b"def add(a, b):", b"def add(a, b):  # caf\xe9"))
    git(repo, "commit", "-qam", "latin-1 comment")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--no-sandbox", "--patch",
                 str(out_dir / "fix.patch"), "--replay", transcript(tmp_path, EDIT, "done")])
    assert code == 0, capsys.readouterr().err
    assert os.listdir(out_dir) == ["fix.patch"]  # no temporary file left
    assert b"caf\xe9" in (out_dir / "fix.patch").read_bytes()
    subprocess.run(["git", "apply", "--check", str(out_dir / "fix.patch")], cwd=repo, check=True)


@pytest.mark.parametrize("kind", ["linked worktree", "submodule"])
def test_apply_where_dot_git_is_a_file(repo, tmp_path, capsys, kind):
    if kind == "linked worktree":
        target = tmp_path / "linked"
        git(repo, "worktree", "add", "-q", "-b", "side", str(target))
    else:
        outer = tmp_path / "outer"
        outer.mkdir()
        git(outer, "init", "-q", "-b", "main")
        git(outer, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(repo), "sample")
        target = outer / "sample"
    assert (target / ".git").is_file()
    code = main(["fix", "tests/test_ops.py::test_add", "--repo", str(target), "--no-sandbox", "--apply",
                 "--replay", transcript(tmp_path, EDIT, "done")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "applied to your working tree: calc/ops.py" in err
    assert "return a + b" in (target / "calc/ops.py").read_text()
    assert "return a - b" in (repo / "calc/ops.py").read_text()


def test_refused_apply_saves_the_patch_and_does_not_say_fixed(repo, tmp_path, capsys):
    # the model's command edits the user's file while the fix runs (possible only without the sandbox)
    touch = (f"<|tool_call>call:run{{command:{S}echo '# user edit' >> {repo}/calc/ops.py{S}}}<tool_call|>")
    code = main(["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--no-sandbox", "--apply",
                 "--replay", transcript(tmp_path, touch, EDIT, "done")])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "fixed:" not in last and "not_applied" in last
    assert "--include" not in err and "saved as" in err
    saved = repo / ".git/gemma-agent/unapplied-fix.patch"
    assert "+    return a + b" in saved.read_text()


def test_sigterm_during_fix_removes_the_worktree_and_branch(repo, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    slow = transcript(tmp_path, EDIT * 20)
    (repo / ".gemma-agent.toml").write_text(f'[replay]\ndelay = 0.5\ntranscript = "{slow}"\n')
    git(repo, "add", ".gemma-agent.toml")
    git(repo, "commit", "-qm", "slow replay")
    before = state(repo)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "fix", "tests/test_ops.py::test_add", "--repo",
                             str(repo), "--no-sandbox", "--backend", "replay"], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while "gemma-agent/" not in git(repo, "branch", "--list") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated" in err
    assert state(repo) == before


@pytest.mark.parametrize("test_id", ["tests/test_odd.py::test_p[a b]", "tests/test_odd.py::test_p[it's]",
                                     'tests/test_odd.py::test_p[[x] - "y"]', "tests/test_odd.py::test_p[\\xe9t\\xe9]"])
def test_ids_with_spaces_brackets_quotes_and_non_ascii(repo, tmp_path, capsys, test_id):
    (repo / "tests/test_odd.py").write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('v', ['a b', \"it's\", '[x] - \"y\"', '\\u00e9t\\u00e9'])\n"
        "def test_p(v):\n    from calc.ops import add\n    assert add(1, 1) == 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "odd ids")
    code = main(["fix", test_id, "--repo", str(repo), "--no-sandbox", "--json",
                 "--replay", transcript(tmp_path, EDIT, "done")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert test_id in json.loads(out.out)["tests_before"]["failing"]


def test_summary_ids_are_parsed_in_pytests_own_format():
    assert summary_id("tests/a b.py::test_x[1 - 2] - assert [1] == [2]") == "tests/a b.py::test_x[1 - 2]"
    assert summary_id("t.py::T::test_y - AssertionError") == "t.py::T::test_y"
    assert summary_id("t.py::test_z") == "t.py::test_z"
    assert summary_id("tests/test_x.py - ImportError: no") == "tests/test_x.py"
    report = parse_pytest_output("FAILED t.py::test_q[it's \\xe9] - assert 0\n1 failed in 0.1s\n")
    assert [test for test, _ in report.failures] == ["t.py::test_q[it's \\xe9]"]


def test_option_like_test_id_missing_repo_and_a_test_command_that_cannot_start(repo, tmp_path, capsys):
    fails_with(capsys, ["fix", "--repo", str(repo), "--", "-x"], "looks like an option")
    fails_with(capsys, ["fix", "t.py::t", "--repo", "/nonexistent/repo"], "no such directory")
    line = fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--no-sandbox",
                               "--test-command", "no-such-runner -q", "--replay", os.devnull],
                      "could not run the tests")
    assert "no test matched" not in line and "not found" in line


def test_unreachable_base_url_fails_before_the_suite_runs(repo, capsys):
    started = time.monotonic()
    fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--backend", "openai",
                        "--base-url", "http://127.0.0.1:9/v1"], "cannot reach the model server")
    assert time.monotonic() - started < 10


def test_bad_config_and_transcript_files(repo, tmp_path, capsys):
    (repo / ".gemma-agent.toml").write_bytes(b"# caf\xe9\nbackend = 'replay'\n")
    fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo)], "not UTF-8")
    for table, key, value in (("budgets", "max_steps", "0"), ("budgets", "max_time", "-1"),
                              ("sandbox", "timeout", "0"), ("budgets", "context_tokens", "-5")):
        (repo / ".gemma-agent.toml").write_text(f"[{table}]\n{key} = {value}\n")
        fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo)], key, "greater than 0")
    (repo / ".gemma-agent.toml").unlink()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'"caf\xe9"\n')
    fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--replay", str(bad)],
               "not UTF-8")


def test_record_is_refused_into_a_missing_directory_or_onto_the_replayed_file(repo, tmp_path, capsys):
    replayed = transcript(tmp_path, EDIT, "done")
    fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--replay", replayed,
                        "--record", str(tmp_path / "missing/dir/r.jsonl")], "does not exist")
    fails_with(capsys, ["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--replay", replayed,
                        "--record", replayed], "being replayed")
    assert json.loads(Path(replayed).read_text().splitlines()[0]) == EDIT
