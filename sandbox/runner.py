"""`run`: one command in the sandbox with a wall-clock timeout, resource limits and capped output."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from sandbox import linux, macos
from sandbox.environment import sandbox_environment
from sandbox.limits import GiB, Limits, launcher_argv
from sandbox.output import CappedOutput
from sandbox.ownership import SANDBOX_GID, SANDBOX_UID, lent_to_sandbox
from sandbox.view import View, missing_paths, remove_mount_points

INSTALL_HINT = (
    "no command sandbox is available ({reason}). Install bubblewrap (Debian/Ubuntu: "
    "'sudo apt-get install bubblewrap'; Fedora: 'sudo dnf install bubblewrap'; Arch: 'sudo pacman -S "
    "bubblewrap'), or pass --no-sandbox to run commands unconfined (only for code you trust)."
)
_KILL_GRACE = 2.0  # seconds to collect output after the command ends or is killed


class SandboxUnavailable(RuntimeError):
    """No sandbox exists on this machine and the caller did not ask for --no-sandbox."""


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    duration: float


def unavailable_reason() -> str | None:
    """None when commands can be sandboxed here; otherwise why they cannot."""
    if sys.platform == "darwin":
        return None if macos.seatbelt_available() else "sandbox-exec was not found"
    return linux.probe()


def available() -> bool:
    """True when commands can run sandboxed on this machine."""
    return unavailable_reason() is None


def run(command: str | Sequence[str], workspace: str | os.PathLike[str], timeout: float = 60.0, *,
        no_sandbox: bool = False, env: Mapping[str, str] | None = None, cpu_seconds: int | None = 600,
        memory_bytes: int | None = 4 * GiB, max_processes: int | None = 512,
        max_file_bytes: int | None = 1 * GiB, max_open_files: int | None = 1024, tmp_bytes: int = 1 * GiB,
        output_limit: int = 1_000_000, view: View | None = None) -> SandboxResult:
    """Run `command` (a string goes through /bin/sh -c) with the workspace as its writable current dir.

    `view` shows the workspace at the user's repository path with parts of the user's tree (Linux; see
    sandbox.view); the command's current directory is then that path.

    Raises SandboxUnavailable when no sandbox exists and `no_sandbox` is False, ValueError for bad input.
    `output_limit` caps each of stdout and stderr (bytes; head and tail are kept).
    """
    argv = _command_argv(command)
    root = Path(workspace).resolve()
    if not root.is_dir():
        raise ValueError(f"workspace {str(workspace)!r} is not an existing directory")
    if root == Path("/"):
        raise ValueError("the workspace cannot be the filesystem root")
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    limits = Limits(cpu_seconds, memory_bytes, max_processes, max_file_bytes, max_open_files, tmp_bytes)
    if not no_sandbox:
        reason = unavailable_reason()
        if reason is not None:
            raise SandboxUnavailable(INSTALL_HINT.format(reason=reason))
    if not isinstance(output_limit, int) or output_limit < 2:
        raise ValueError(f"output_limit must be an integer of at least 2 bytes, got {output_limit!r}")
    with _prepared(argv, root, limits, env, no_sandbox, view) as (full_argv, child_env):
        return _execute(full_argv, root, child_env, timeout, output_limit)


def _command_argv(command: str | Sequence[str]) -> list[str]:
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("command is empty")
        return ["/bin/sh", "-c", command]
    argv = [os.fspath(part) for part in command]
    if not argv or not argv[0]:
        raise ValueError("command is empty")
    return argv


@contextlib.contextmanager
def _prepared(argv: list[str], root: Path, limits: Limits, env: Mapping[str, str] | None,
              no_sandbox: bool, view: View | None) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The full command line (launcher, and sandbox wrapper unless `no_sandbox`) and its environment."""
    if no_sandbox:
        command = launcher_argv(limits, argv, str(root))
        with tempfile.TemporaryDirectory(prefix="gemma-agent-home-") as home:
            yield command, sandbox_environment(home, env)
        return
    if sys.platform == "darwin":
        with tempfile.TemporaryDirectory(prefix="gemma-agent-tmp-") as tmp:
            tmp = os.path.realpath(tmp)
            child_env = sandbox_environment(tmp, {**(env or {}), "TMPDIR": tmp})
            # macOS counts RLIMIT_NPROC over all the user's processes, not per sandbox: leave it alone.
            command = launcher_argv(dataclasses.replace(limits, max_processes=None), argv, str(root))
            readable = tuple(view.read_only) if view else ()
            yield macos.seatbelt_argv(command, str(root), tmp, str(Path.home()), readable), child_env
        return
    git_env = linux.ROOT_GIT_ENV if linux.runs_as_root() else {}
    child_env = sandbox_environment(linux.SANDBOX_HOME, {**git_env, **(env or {}), "TMPDIR": "/tmp"})
    cwd = view.path if view else str(root)
    created = [p for _, rel in (view.shared_sources() if view else ()) for p in missing_paths(root, rel)]
    user = (SANDBOX_UID, SANDBOX_GID) if linux.runs_as_root() else None
    command = launcher_argv(limits, argv, cwd, user=user)
    try:
        with tempfile.TemporaryDirectory(prefix="gemma-agent-bwrap-") as scratch:
            os.chmod(scratch, 0o755)
            full = linux.bwrap_argv(command, root, limits, view, Path(scratch))
            with lent_to_sandbox(root) if user else contextlib.nullcontext():
                yield full, child_env
    finally:
        remove_mount_points(created)


def _execute(argv: list[str], cwd: Path, env: dict[str, str], timeout: float, output_limit: int) -> SandboxResult:
    """Run to completion or timeout, draining both pipes into capped buffers; kill the process group after."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    out, err = CappedOutput(output_limit), CappedOutput(output_limit)
    try:
        timed_out = _drain(proc, {proc.stdout: out, proc.stderr: err}, start + timeout)
        try:
            code = proc.wait(timeout=_KILL_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = proc.wait()
    except BaseException:  # e.g. KeyboardInterrupt: never leave the command running
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return SandboxResult(
        exit_code=128 - code if code < 0 else code,  # killed by signal N -> 128+N, as shells report it
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
        duration=time.monotonic() - start,
    )


def _drain(proc: subprocess.Popen, streams: dict, deadline: float) -> bool:
    """Read both pipes until they close; kill the group at the deadline or once the command has exited
    (leftover background jobs must not hold the pipes open). True when the deadline was hit."""
    timed_out = False
    grace_end: float | None = None
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if grace_end is None and (proc.poll() is not None or now >= deadline):
                timed_out = proc.returncode is None
                _kill_group(proc)
                grace_end = now + _KILL_GRACE
            if grace_end is not None and now >= grace_end:
                break
            for key, _ in selector.select(min(0.1, max(0.0, (grace_end or deadline) - now))):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if chunk:
                    streams[key.fileobj].add(chunk)
                else:
                    selector.unregister(key.fileobj)
    return timed_out


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
