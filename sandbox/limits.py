"""Resource limits applied to a sandboxed command, and the tiny launcher that applies them.

The launcher runs *inside* the sandbox. For a normal user that is inside bubblewrap's user namespace,
where RLIMIT_NPROC counts per (user namespace, uid) since Linux 5.14 (kernel/ucount.c): only the
sandbox's own processes, not every process the user runs. For root, the launcher also drops to the
sandbox uid (root is exempt from RLIMIT_NPROC); the count is then that uid's processes machine-wide.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    """Per-process limits (setrlimit) for one command; None leaves a limit as inherited."""

    cpu_seconds: int | None = 600
    memory_bytes: int | None = 4 * GiB  # RLIMIT_DATA: private writable memory (heap, anonymous mmap)
    max_processes: int | None = 512  # RLIMIT_NPROC; only holds for a non-root uid
    max_file_bytes: int | None = 1 * GiB  # RLIMIT_FSIZE: largest file the command may write
    max_open_files: int | None = 1024  # RLIMIT_NOFILE
    tmp_bytes: int = 1 * GiB  # size of the private /tmp (and hidden home) tmpfs

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "max_processes", "max_file_bytes", "max_open_files"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.tmp_bytes <= 0:
            raise ValueError(f"tmp_bytes must be positive, got {self.tmp_bytes!r}")


# argv: launcher NPROC CPU DATA FSIZE NOFILE UID GID CWD command...   ("-" = leave unchanged)
# The chdir comes after the uid drop: the workspace may be 0700 and owned by the sandbox uid.
# PR_SET_NO_NEW_PRIVS (38) keeps setuid binaries from undoing the uid drop (prctl(2)).
_LAUNCHER = """
import ctypes, os, resource, sys
names = ("NPROC", "CPU", "DATA", "FSIZE", "NOFILE")
for name, value in zip(names, sys.argv[1:6]):
    if value != "-":
        limit = int(value)
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (limit, limit))
if sys.platform == "linux" and ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:
    sys.stderr.write("sandbox: cannot set no_new_privs\\n")
    os._exit(126)
if sys.argv[6] != "-":
    os.setgroups([])
    os.setgid(int(sys.argv[7]))
    os.setuid(int(sys.argv[6]))
os.chdir(sys.argv[8])
try:
    os.execvp(sys.argv[9], sys.argv[9:])
except OSError as exc:
    sys.stderr.write("sandbox: cannot run %r: %s\\n" % (sys.argv[9], exc.strerror))
    os._exit(127)
"""


def launcher_argv(limits: Limits, argv: list[str], cwd: str, user: tuple[int, int] | None = None) -> list[str]:
    """The command line that applies `limits`, drops to `user` (uid, gid) if given, enters `cwd`, execs `argv`."""
    values = (limits.max_processes, limits.cpu_seconds, limits.memory_bytes, limits.max_file_bytes,
              limits.max_open_files, *(user or (None, None)))
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, *("-" if v is None else str(v) for v in values),
            cwd, *argv]
