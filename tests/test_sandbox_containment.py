"""Containment battery: each case tries to escape and asserts, from outside, that nothing happened.

Every bomb is bounded (processes exit by themselves, memory and output stop growing) so that a broken
sandbox fails these tests without taking the machine down.
"""
from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import sandbox
from tests.sandbox_helpers import git, linux_only, require_sandbox  # noqa: F401

pytestmark = [linux_only, pytest.mark.usefixtures("require_sandbox")]


@pytest.fixture
def outside_dir():
    """A directory outside both the workspace and /tmp (which the sandbox replaces with its own)."""
    path = Path(f"/var/tmp/gemma-agent-containment-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home_secret():
    secret = f"s3cret-{uuid.uuid4().hex}"
    path = Path.home() / f".gemma-agent-test-secret-{uuid.uuid4().hex[:8]}"
    path.write_text(secret)
    yield path, secret
    path.unlink(missing_ok=True)


def test_cannot_connect_to_a_listener_on_the_host_loopback(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(4)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except socket.timeout:
            pass

    listener = threading.Thread(target=accept)
    listener.start()
    script = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')"
    result = sandbox.run([sys.executable, "-c", script], tmp_path, timeout=20)
    listener.join()
    server.close()
    assert accepted == [], "the sandboxed command reached a host listener"
    assert result.exit_code != 0 and "Connection refused" in result.stderr


def test_no_network_interface_but_loopback(tmp_path):
    result = sandbox.run("cat /proc/net/dev", tmp_path, timeout=20)
    interfaces = {line.split(":")[0].strip() for line in result.stdout.splitlines()[2:]}
    assert interfaces == {"lo"}


def test_cannot_write_outside_the_workspace(tmp_path, outside_dir):
    target = outside_dir / "escaped.txt"
    result = sandbox.run(f"echo pwned > {target}; echo pwned > /usr/escaped-{outside_dir.name}", tmp_path, timeout=20)
    assert result.exit_code != 0
    assert not target.exists()
    assert not Path(f"/usr/escaped-{outside_dir.name}").exists()
    assert "Read-only file system" in result.stderr


def test_tmp_is_private_and_discarded(tmp_path):
    marker = f"/tmp/gemma-agent-private-{uuid.uuid4().hex}"
    result = sandbox.run(f"echo x > {marker} && cat {marker}", tmp_path, timeout=20)
    assert result.stdout == "x\n"
    assert not Path(marker).exists()


def test_cannot_write_git_hooks_of_the_workspace_repo(tmp_path):
    git(tmp_path, "init", "-q")
    hook = tmp_path / ".git" / "hooks" / "pre-commit"
    result = sandbox.run("mkdir -p .git/hooks; printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit; "
                         "git config core.hooksPath /tmp; rm -rf .git", tmp_path, timeout=20)
    assert result.exit_code != 0
    assert not hook.exists()
    assert "hooksPath" not in (tmp_path / ".git" / "config").read_text()
    assert (tmp_path / ".git" / "HEAD").exists()


def test_cannot_write_hooks_of_the_main_repo_from_a_worktree(tmp_path):
    repo, worktree = tmp_path / "repo", tmp_path / "wt"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "f.txt").write_text("x\n")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-qm", "init")
    git(repo, "worktree", "add", "-q", "-b", "agent", str(worktree))
    hooks = repo / ".git" / "hooks"
    before = sorted(p.name for p in hooks.iterdir())
    result = sandbox.run(f"echo pwned > {hooks}/post-checkout; echo changed > f.txt; git status --short",
                         worktree, timeout=20)
    assert sorted(p.name for p in hooks.iterdir()) == before
    assert "Read-only file system" in result.stderr
    assert result.stdout.strip() == "M f.txt", result.stderr  # git still works read-only inside the sandbox


def test_cannot_read_a_secret_in_the_home_directory(tmp_path, home_secret):
    path, secret = home_secret
    result = sandbox.run(f"cat {path}; ls -a {Path.home()}", tmp_path, timeout=20)
    assert secret not in result.stdout + result.stderr
    assert path.name not in result.stdout


def test_symlink_in_the_workspace_to_outside_gives_no_access(tmp_path, outside_dir, home_secret):
    secret_path, secret = home_secret
    victim = outside_dir / "victim.txt"
    victim.write_text("original\n")
    (tmp_path / "to_victim").symlink_to(victim)
    (tmp_path / "to_secret").symlink_to(secret_path)
    result = sandbox.run("echo pwned > to_victim; cat to_secret", tmp_path, timeout=20)
    assert victim.read_text() == "original\n"
    assert secret not in result.stdout + result.stderr
    assert os.readlink(tmp_path / "to_victim") == str(victim)  # the ownership hand-back did not follow it
    assert os.stat(victim).st_uid == os.getuid()


def test_secret_environment_variables_do_not_pass(tmp_path, monkeypatch):
    values = {"GITHUB_TOKEN": "ghp_tokenvalue1", "AWS_SECRET_ACCESS_KEY": "awssecretvalue2",
              "OPENAI_API_KEY": "sk-value3", "DB_PASSWORD": "pwvalue4"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    result = sandbox.run("env; cat /proc/1/environ", tmp_path, timeout=20,
                         env={"HF_TOKEN": "hfvalue5", "PLAIN": "ok"})
    seen = result.stdout + result.stderr
    for value in [*values.values(), "hfvalue5"]:
        assert value not in seen
    assert "PLAIN=ok" in seen


def _count_marked_processes(marker: str) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    count += marker.encode() in f.read()
            except OSError:
                continue
    return count


def test_fork_bomb_is_held_by_the_process_limit(tmp_path):
    marker = f"forkbomb-{uuid.uuid4().hex[:8]}"
    # At most 2000 children, each gone after 3 s: harmless even if the limit did not hold.
    script = (f"# {marker}\nimport os, time\nn = 0\nfor _ in range(2000):\n"
              "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
              "    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\nprint(n)\ntime.sleep(1)")
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _count_marked_processes(marker))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = sandbox.run([sys.executable, "-c", script], tmp_path, timeout=30, max_processes=50)
    finally:
        done.set()
        sampler.join()
    assert result.exit_code == 0, result.stderr
    assert int(result.stdout) < 50
    # The two bubblewrap processes (outside and the namespace's init) carry the marker too.
    assert 0 < peak <= 50 + 2, f"{peak} bomb processes seen on the host"


def test_memory_bomb_is_held_by_the_memory_limit(tmp_path):
    # Touches at most 2 GiB in 64 MiB steps, then stops by itself; reports what it got and its own peak RSS.
    script = ("import resource\nchunks = []\ntry:\n    for _ in range(32):\n        chunks.append(bytearray(64 << 20))\n"
              "except MemoryError:\n    pass\n"
              "print(len(chunks) * 64, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = sandbox.run([sys.executable, "-c", script], tmp_path, timeout=60, memory_bytes=256 << 20)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert result.exit_code == 0, result.stderr
    got_mib, own_peak_kib = map(int, result.stdout.split())
    assert got_mib <= 256 and own_peak_kib < 600 * 1024
    # Seen from outside: RUSAGE_CHILDREN is the largest of all this process's children so far (earlier tests
    # included), so it tells about this command only when the command raised it.
    if peak_kib > before:
        assert peak_kib < 600 * 1024, f"a child reached {peak_kib} KiB resident"


def test_endless_output_is_capped(tmp_path):
    # 200 MB of output that ends by itself; only the cap is kept.
    result = sandbox.run("head -c 200000000 /dev/zero | tr '\\0' y", tmp_path, timeout=60, output_limit=10_000)
    assert result.truncated
    assert len(result.stdout) < 11_000
    assert result.stdout.startswith("yyyy") and result.stdout.endswith("yyyy")


def test_never_ending_output_is_stopped_by_the_timeout(tmp_path):
    result = sandbox.run("yes", tmp_path, timeout=1, output_limit=1000)
    assert result.timed_out and result.truncated and len(result.stdout) < 1100


def test_timeout_kills_background_and_detached_processes(tmp_path):
    command = ("(sleep 3; touch bg-survived) & setsid sh -c 'sleep 3; touch detached-survived' & "
               "nohup sh -c 'sleep 3; touch nohup-survived' >/dev/null 2>&1 & sleep 30")
    result = sandbox.run(command, tmp_path, timeout=1)
    assert result.timed_out and result.duration < 5
    time.sleep(4)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_processes_left_behind_by_a_finished_command_are_killed(tmp_path):
    result = sandbox.run("setsid sh -c 'sleep 2; touch survived' > /dev/null 2>&1 &", tmp_path, timeout=20)
    assert result.exit_code == 0 and result.duration < 2
    time.sleep(3)
    assert not (tmp_path / "survived").exists()


def test_command_dies_with_its_parent(tmp_path):
    """Killing the agent process (SIGKILL, no cleanup) must not leave the sandboxed command running."""
    repo_root = Path(__file__).resolve().parents[1]
    script = f"import sandbox\nsandbox.run('sleep 3; touch outlived-parent', {str(tmp_path)!r}, timeout=30)"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=repo_root)
    time.sleep(1.5)  # the sandbox is up and sleeping
    parent.kill()
    parent.wait()
    time.sleep(3)
    assert not (tmp_path / "outlived-parent").exists()


def test_a_forged_git_file_does_not_mount_a_home_directory(tmp_path, home_secret):
    secret_path, secret = home_secret
    secret_dir = secret_path.with_suffix(".d")
    secret_dir.mkdir()
    try:
        (secret_dir / "HEAD").write_text(secret)
        (tmp_path / ".git").write_text(f"gitdir: {secret_dir}\n")
        result = sandbox.run(f"cat {secret_dir}/HEAD", tmp_path, timeout=20)
        assert secret not in result.stdout + result.stderr
    finally:
        shutil.rmtree(secret_dir)


def test_a_git_symlink_does_not_mount_its_target(tmp_path, home_secret):
    secret_path, secret = home_secret
    (tmp_path / ".git").symlink_to(secret_path.parent)
    result = sandbox.run(f"cat .git/{secret_path.name}", tmp_path, timeout=20)
    assert secret not in result.stdout + result.stderr
