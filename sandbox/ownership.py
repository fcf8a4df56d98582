"""Lending a workspace to the unprivileged sandbox uid while a command runs as that uid (root only).

Root cannot enforce a process limit on itself (RLIMIT_NPROC is ignored for uid 0), so when we run as
root the sandboxed command runs as SANDBOX_UID instead. That uid needs to own the workspace to write
it; afterwards everything is handed back: entries that existed get their owner (and mode, which chown
may strip of setuid bits) restored, entries the command created go to the workspace owner. `.git` is
never lent. Symlinks are changed with lchown and never followed.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SANDBOX_UID = 65534  # "nobody" on Debian/Ubuntu/Fedora
SANDBOX_GID = 65534

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _entries(root: Path) -> Iterator[str]:
    yield str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def _lock_for(root: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(root), threading.Lock())


@contextmanager
def lent_to_sandbox(workspace: Path, uid: int = SANDBOX_UID, gid: int = SANDBOX_GID) -> Iterator[None]:
    """Make `uid` own the workspace for the duration of the block, then restore ownership exactly."""
    root = workspace.resolve()
    with _lock_for(root):
        owner = os.lstat(root)
        original: dict[str, tuple[int, int, int]] = {}
        try:
            for path in _entries(root):
                st = os.lstat(path)
                original[path] = (st.st_uid, st.st_gid, st.st_mode)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.lchown(path, uid, gid)
            yield
        finally:
            for path in _entries(root):
                try:
                    st = os.lstat(path)
                    uid_, gid_, mode = original.get(path, (owner.st_uid, owner.st_gid, None))
                    if (st.st_uid, st.st_gid) != (uid_, gid_):
                        os.lchown(path, uid_, gid_)
                    if mode is not None and not os.path.islink(path) and os.lstat(path).st_mode != mode:
                        os.chmod(path, mode & 0o7777)
                except FileNotFoundError:
                    continue
