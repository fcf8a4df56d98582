"""sandbox.run: results, limits, environment, ownership and refusals, with real processes."""
from __future__ import annotations

import os
import sys

import pytest

import sandbox
from sandbox import linux, runner
from sandbox.environment import sandbox_environment
from sandbox.output import CappedOutput
from tests.sandbox_helpers import linux_only, require_sandbox  # noqa: F401

pytestmark = [linux_only, pytest.mark.usefixtures("require_sandbox")]


def test_string_command_runs_through_sh_in_the_workspace(tmp_path):
    result = sandbox.run("echo out; echo err >&2; pwd; exit 3", tmp_path, timeout=20)
    assert result.exit_code == 3
    assert result.stdout.splitlines() == ["out", str(tmp_path.resolve())]
    assert result.stderr == "err\n"
    assert not result.timed_out and not result.truncated
    assert 0 < result.duration < 20


def test_argv_command_is_not_interpreted_by_a_shell(tmp_path):
    result = sandbox.run(["printf", "%s|", "a b", "$HOME"], tmp_path, timeout=20)
    assert result.exit_code == 0
    assert result.stdout == "a b|$HOME|"


def test_missing_program_reports_127(tmp_path):
    result = sandbox.run(["no-such-program-xyz"], tmp_path, timeout=20)
    assert result.exit_code == 127
    assert "no-such-program-xyz" in result.stderr


def test_workspace_writes_persist_and_belong_to_the_workspace_owner(tmp_path):
    (tmp_path / "existing.txt").write_text("old\n")
    os.chmod(tmp_path / "existing.txt", 0o640)
    result = sandbox.run("echo new >> existing.txt && mkdir -p d/e && echo x > d/e/f.txt", tmp_path, timeout=20)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "existing.txt").read_text() == "old\nnew\n"
    assert (tmp_path / "d/e/f.txt").read_text() == "x\n"
    owner = os.stat(tmp_path)
    for path in [tmp_path / "existing.txt", tmp_path / "d", tmp_path / "d/e", tmp_path / "d/e/f.txt"]:
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (owner.st_uid, owner.st_gid), path
    assert os.stat(tmp_path / "existing.txt").st_mode & 0o7777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop only happens for root")
def test_root_caller_runs_the_command_unprivileged(tmp_path):
    result = sandbox.run(["id", "-u"], tmp_path, timeout=20)
    assert result.stdout.strip() == str(sandbox.ownership.SANDBOX_UID)


def test_timeout_kills_and_reports(tmp_path):
    result = sandbox.run("echo started; sleep 30", tmp_path, timeout=1)
    assert result.timed_out
    assert result.exit_code != 0
    assert result.stdout == "started\n"
    assert result.duration < 10


def test_output_is_capped_keeping_head_and_tail(tmp_path):
    script = "import sys\nfor i in range(100000): print(f'line {i}')"
    result = sandbox.run([sys.executable, "-c", script], tmp_path, timeout=30, output_limit=1000)
    assert result.truncated and result.exit_code == 0
    assert result.stdout.startswith("line 0\nline 1\n")
    assert result.stdout.rstrip().endswith("line 99999")
    assert "bytes of output omitted" in result.stdout
    assert len(result.stdout) < 1200


def test_rlimits_reach_the_command(tmp_path):
    result = sandbox.run("ulimit -n; ulimit -f; ulimit -t", tmp_path, timeout=20, max_open_files=77,
                         max_file_bytes=512 * 1024, cpu_seconds=33)
    assert result.stdout.split() == ["77", "1024", "33"]  # ulimit -f counts 512-byte blocks


def test_file_size_limit_stops_a_big_write(tmp_path):
    result = sandbox.run("head -c 5000000 /dev/zero > big.bin", tmp_path, timeout=20, max_file_bytes=1_000_000)
    assert result.exit_code != 0
    assert (tmp_path / "big.bin").stat().st_size <= 1_000_000


def test_cpu_time_limit_kills_a_busy_loop(tmp_path):
    result = sandbox.run([sys.executable, "-c", "while True: pass"], tmp_path, timeout=30, cpu_seconds=1)
    assert not result.timed_out
    assert result.exit_code != 0
    assert result.duration < 20


def test_environment_is_an_allowlist_with_home_inside(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_RANDOM_SETTING", "visible-outside")
    result = sandbox.run("env", tmp_path, timeout=20, env={"MY_FLAG": "1"})
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "SOME_RANDOM_SETTING" not in env
    assert env["MY_FLAG"] == "1"
    assert env["HOME"] == linux.SANDBOX_HOME
    # gemma-agent's own interpreter is not slipped onto PATH: commands use the project's environment
    assert os.path.dirname(sys.executable) not in env["PATH"].split(os.pathsep)


def test_environment_builder_drops_secret_names_even_when_passed_explicitly():
    env = sandbox_environment("/h", {"GITHUB_TOKEN": "t", "api_key": "k", "OK": "1"},
                              base={"PATH": "/bin", "LC_ALL": "C", "AWS_SECRET_ACCESS_KEY": "s", "LC_PASSWORD": "p"})
    assert env == {"PATH": "/bin", "LC_ALL": "C", "OK": "1", "LANG": "C.UTF-8", "HOME": "/h"}


@pytest.mark.parametrize("bad", ["", "   ", []])
def test_empty_command_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="empty"):
        sandbox.run(bad, tmp_path)


def test_missing_workspace_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not an existing directory"):
        sandbox.run("true", tmp_path / "nope")


def test_bad_limit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_processes"):
        sandbox.run("true", tmp_path, max_processes=0)


def test_no_sandbox_refused_without_bubblewrap_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "unavailable_reason", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(sandbox.SandboxUnavailable) as info:
        sandbox.run("touch created", tmp_path)
    assert "apt-get install bubblewrap" in str(info.value) and "--no-sandbox" in str(info.value)
    assert not (tmp_path / "created").exists()
    result = sandbox.run("touch created && echo done", tmp_path, timeout=20, no_sandbox=True)
    assert result.stdout == "done\n" and (tmp_path / "created").exists()


def test_missing_bwrap_on_path_makes_the_sandbox_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert not sandbox.available()
    assert "not installed" in sandbox.unavailable_reason()
    with pytest.raises(sandbox.SandboxUnavailable, match="install bubblewrap"):
        sandbox.run(["true"], tmp_path)


def test_a_broken_bwrap_fails_closed(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert "No permissions to create new namespace" in sandbox.unavailable_reason()
    with pytest.raises(sandbox.SandboxUnavailable, match="--no-sandbox"):
        sandbox.run("touch created", tmp_path)
    assert not (tmp_path / "created").exists()


def test_no_sandbox_mode_still_times_out_and_filters_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_TOKEN", "hunter2")
    result = sandbox.run("env; sleep 30", tmp_path, timeout=1, no_sandbox=True)
    assert result.timed_out and "hunter2" not in result.stdout


def test_capped_output_keeps_exact_head_and_tail():
    out = CappedOutput(10)
    for piece in [b"0123", b"4567", b"89ab", b"cdef"]:
        out.add(piece)
    assert out.truncated and bytes(out.head) == b"01234" and bytes(out.tail) == b"bcdef"
    assert out.text() == "01234\n[... 6 bytes of output omitted ...]\nbcdef"
