"""Bubblewrap command lines: read-only root, writable workspace, private /tmp, no network, new PID namespace.

As root, bubblewrap runs privileged (no user namespace) and our launcher drops the command to the
unprivileged SANDBOX_UID: RLIMIT_NPROC is not enforced for uid 0 nor for a uid mapped to 0 in a user
namespace, so a root caller could not contain a fork bomb otherwise. (Running bwrap itself as that uid
does not work: it then cannot bind sources below 0700 directories such as /root or pytest's tmp dirs.)
As a normal user, bwrap creates a user namespace and the command keeps the user's uid.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sandbox.limits import Limits
from sandbox.view import View

SANDBOX_HOME = "/tmp"  # HOME inside the sandbox: the private, discarded /tmp
# As root the command runs as another uid than the repository's owner; git would refuse the repository as
# "dubious ownership" (git-config(1), safe.directory) without this command-scope setting.
ROOT_GIT_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}


def runs_as_root() -> bool:
    return os.geteuid() == 0


def _namespace_options() -> list[str]:
    options = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--new-session"]
    if runs_as_root():  # only what the launcher needs to drop to the sandbox uid; gone after it does
        return options + ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return ["--unshare-user"] + options


def hidden_directories() -> list[str]:
    """Directories replaced by an empty tmpfs: /tmp (private), home directories, and /run (sockets)."""
    seen: list[str] = []
    for path in ["/tmp", "/run", "/home", "/root", str(Path.home())]:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real != "/" and real not in seen:
            seen.append(real)
    return sorted(seen, key=len)  # parents first, so a nested home is not covered by its parent's tmpfs


def _is_under(path: str, directories: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def git_dirs(workspace: Path) -> list[str]:
    """The repository directories a worktree's `.git` file points to: [common dir, worktree's git dir].

    Only the layout `git worktree` makes (`<repo>/.git/worktrees/<name>`) is accepted, so a `.git` file
    edited to point at, say, ~/.ssh cannot get that directory mounted into the sandbox.
    """
    dot_git = workspace / ".git"
    if dot_git.is_symlink() or not dot_git.is_file():
        return []
    text = dot_git.read_text(errors="replace").strip()
    if not text.startswith("gitdir:"):
        return []
    gitdir = (workspace / text[len("gitdir:"):].strip()).resolve()
    common = gitdir.parent.parent
    if gitdir.parent.name != "worktrees" or not (gitdir / "HEAD").is_file() or not (common / "HEAD").is_file():
        return []
    return [str(common), str(gitdir)]


def _toolchain_dirs(hidden: list[str]) -> list[str]:
    """Python installations our launcher needs that would otherwise be hidden (e.g. pyenv under /root)."""
    prefixes = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    return sorted(p for p in prefixes if _is_under(p, hidden))


def _mount_points(path: str, hidden: list[str]) -> list[str]:
    """`--dir` options making the parents of a bind target inside a tmpfs searchable (bwrap creates them 0700)."""
    tops = [d for d in hidden if path.startswith(d.rstrip("/") + "/")]
    if not tops:
        return []
    top = max(tops, key=len)
    options: list[str] = []
    parent = Path(path).parent
    while str(parent) != top and len(str(parent)) > len(top):
        options[:0] = ["--perms", "0755", "--dir", str(parent)]
        parent = parent.parent
    return options


GIT_MOUNT = "/tmp/.gemma-agent-git"  # where a remapped workspace's repository directory is shown


def bwrap_argv(argv: list[str], workspace: Path, limits: Limits, view: View | None = None,
               scratch: Path | None = None) -> list[str]:
    """The bubblewrap invocation running `argv` with `workspace` (resolved) writable at `view.path` (default: its
    own path). Mounts come in bwrap's order, later over earlier: the read-only root, the hidden directories'
    tmpfs, toolchains and environments, the workspace, its repository metadata, then the shared entries of
    the user's tree. `scratch` (a private directory) holds the `.git` file of a remapped worktree."""
    ws = str(workspace)
    target = view.path if view else ws
    hidden = hidden_directories()
    cmd = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", *_namespace_options(), "--hostname", "sandbox"]
    for directory in hidden:  # /tmp is world-writable and sticky, as usual; the hidden homes are not writable
        perms = "1777" if directory == "/tmp" else "0755"
        cmd += ["--perms", perms, "--size", str(limits.tmp_bytes), "--tmpfs", directory]
    extra = [os.path.realpath(d) for d in (view.read_only if view else ()) if os.path.isdir(d)]
    for prefix in sorted({*_toolchain_dirs(hidden), *(d for d in extra if _is_under(d, hidden))}, key=len):
        if not _is_under(prefix, [target]):
            cmd += [*_mount_points(prefix, hidden), "--ro-bind", prefix, prefix]
    cmd += [*_mount_points(target, hidden), "--bind", ws, target]
    cmd += _git_mounts(workspace, target, hidden, scratch)
    for source, rel in view.shared_sources() if view else ():
        mine = os.path.join(ws, rel)
        if os.path.lexists(mine) and os.path.isdir(mine) != os.path.isdir(source):
            continue  # the agent's copy has another kind of entry there (a bind would fail): its own wins
        cmd += ["--ro-bind", source, os.path.join(target, rel)]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--size", str(limits.tmp_bytes),
            "--tmpfs", "/dev/shm",
            "--chdir", "/", "--", *argv]  # the launcher in argv enters the workspace
    return cmd


def _git_mounts(workspace: Path, target: str, hidden: list[str], scratch: Path | None) -> list[str]:
    """The workspace's repository metadata, read-only. A worktree shown at another path whose repository lies
    under that path (the usual `<repo>/.git`) gets its repository at GIT_MOUNT and a `.git` file pointing there."""
    dot_git = workspace / ".git"
    if dot_git.is_symlink() or not dot_git.exists():
        return []
    if dot_git.is_dir():
        return ["--ro-bind", str(dot_git), os.path.join(target, ".git")]
    dirs = git_dirs(workspace)
    if not dirs:
        return []
    common, gitdir = dirs
    if not _is_under(common, [target]) and not _is_under(gitdir, [target]):
        options = ["--ro-bind", str(dot_git), os.path.join(target, ".git")]
        for directory in dirs:
            options += [*_mount_points(directory, hidden), "--ro-bind", directory, directory]
        return options
    if scratch is None:
        return []
    pointer = scratch / "dotgit"
    pointer.write_text(f"gitdir: {GIT_MOUNT}/{os.path.relpath(gitdir, common)}\n", encoding="utf-8")
    return [*_mount_points(GIT_MOUNT, hidden), "--ro-bind", common, GIT_MOUNT,
            "--ro-bind", str(pointer), os.path.join(target, ".git")]


def probe() -> str | None:
    """None when bubblewrap works here with every namespace we need; otherwise why not."""
    if sys.platform != "linux":
        return "bubblewrap is Linux-only"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    return _probe_binary(bwrap)


@functools.lru_cache(maxsize=8)
def _probe_binary(bwrap: str) -> str | None:
    argv = [bwrap, "--ro-bind", "/", "/", *_namespace_options(), "--dev", "/dev", "--proc", "/proc", "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start: {exc}"
    if done.returncode != 0:
        return f"bubblewrap cannot create the namespaces it needs: {done.stderr.strip() or done.returncode}"
    return None
