"""Workspace isolation: the agent edits a private git worktree (or a copy), never the user's files.

A git source gets a `git worktree` on a new branch `gemma-agent/<id>` at HEAD, with the user's state
(per `include`) committed on top as the starting point; a plain directory gets a copy with a private git
repository. Every checkpoint is a commit on that branch, `diff()` is everything since the start, and
`apply()` is the only operation that writes to the user's tree. The user's index is never written: their
staged/working state is read through a throwaway copy of the index (GIT_INDEX_FILE).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from sandbox.view import View

INCLUDE_MODES = ("head", "index", "working")
_IDENTITY = ["-c", "user.name=gemma-agent", "-c", "user.email=gemma-agent@localhost",
             "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"]
# Variables that would point git at another repository or index than the one we name.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")
LARGE_UNTRACKED = 1 << 20  # bytes: a bigger untracked file is shown to commands, never copied into git objects
# Ignored entries not shown to commands: caches each tool rebuilds in the workspace (and writes to).
_NOT_SHARED = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".tox", ".nox"}


class WorkspaceError(RuntimeError):
    """A workspace operation that cannot be done; the message says why and what to do."""


def _git(cwd: Path, *args: str, index_file: str | None = None, input: bytes | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    if index_file:
        env["GIT_INDEX_FILE"] = index_file
    done = subprocess.run(["git", *_IDENTITY, *args], cwd=cwd, env=env, input=input, capture_output=True)
    if check and done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or done.stdout.decode(errors="replace").strip()
        raise WorkspaceError(f"git {' '.join(args[:2])} failed in {cwd}: {message}")
    return done


def _out(cwd: Path, *args: str, **kwargs) -> str:
    return _git(cwd, *args, **kwargs).stdout.decode().strip()


def _repo_root(directory: Path) -> Path | None:
    done = _git(directory, "rev-parse", "--show-toplevel", check=False)
    return Path(done.stdout.decode().strip()) if done.returncode == 0 else None


def _names(output: bytes) -> list[str]:
    return [n.decode("utf-8", errors="surrogateescape") for n in output.split(b"\0") if n]


def _ignored_entries(repo: Path) -> list[str]:
    """Ignored files and directories of the user's tree (a wholly ignored directory is one entry)."""
    out = _git(repo, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory").stdout
    entries = [name.rstrip("/") for name in _names(out)]
    return [name for name in entries
            if not set(Path(name).parts) & _NOT_SHARED and not name.endswith((".pyc", ".pyo"))]


def _untracked_environments(repo: Path) -> list[str]:
    """Top-level untracked directories holding a Python environment (pyvenv.cfg or conda-meta/)."""
    found = []
    for entry in sorted(os.listdir(repo)):
        if (repo / entry / "pyvenv.cfg").is_file() or (repo / entry / "conda-meta").is_dir():
            if not _git(repo, "ls-files", "-z", "--", entry).stdout:
                found.append(entry)
    return found


def _large_untracked(repo: Path, skip: list[str]) -> list[str]:
    """Untracked, not ignored files of LARGE_UNTRACKED bytes or more (outside the directories in `skip`)."""
    out = _git(repo, "ls-files", "-z", "--others", "--exclude-standard").stdout
    large = []
    for name in _names(out):
        if Path(name).parts[0] in skip:
            continue
        try:
            if os.lstat(repo / name).st_size >= LARGE_UNTRACKED:
                large.append(name)
        except OSError:
            continue
    return large


class Workspace:
    """The agent's private copy of a project. Create with `Workspace.create`; use as a context manager."""

    def __init__(self, path: Path, source: Path, base: str, branch: str | None, temp_root: Path,
                 shared: tuple[str, ...] = (), uncommitted: tuple[str, ...] = ()):
        self.path = path
        self.source = source
        self.base = base  # commit of the starting state; diff() is relative to it
        self.branch = branch  # None for a copy of a non-git directory
        self.shared = shared  # entries of the user's tree shown to commands, never copied (see view())
        self.uncommitted = uncommitted  # files whose starting state is the user's uncommitted version
        self.applied = base  # what the user's tree already has: apply() writes the changes since
        self._temp_root = temp_root
        self._closed = False

    @classmethod
    def create(cls, source_dir: str | os.PathLike[str], *, include: str = "working", index_file: str | None = None,
               revision: str = "HEAD") -> Workspace:
        """A worktree (git source) or a copy (plain directory) holding the user's state per `include`:
        `working` (tracked and untracked files), `index` (the staged state; `index_file` names another index
        than the repository's, as GIT_INDEX_FILE does in hooks) or `head` (the commit `revision`)."""
        if include not in INCLUDE_MODES:
            raise ValueError(f"include must be one of {', '.join(INCLUDE_MODES)}, got {include!r}")
        source = Path(source_dir).resolve()
        if not source.is_dir():
            raise WorkspaceError(f"{source_dir} is not an existing directory")
        temp_root = Path(tempfile.mkdtemp(prefix="gemma-agent-"))
        try:
            repo = _repo_root(source)
            if repo is None:
                return cls._copy(source, temp_root)
            return cls._worktree(repo, include, temp_root, index_file, revision)
        except BaseException:
            shutil.rmtree(temp_root, ignore_errors=True)
            raise

    @classmethod
    def _worktree(cls, repo: Path, include: str, temp_root: Path, index_file: str | None,
                  revision: str) -> Workspace:
        if _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
            raise WorkspaceError(f"{repo} has no commits yet; make a first commit (git commit), then run "
                                 "gemma-agent again")
        start = revision if include == "head" else "HEAD"
        if _git(repo, "rev-parse", "--verify", "-q", f"{start}^{{commit}}", check=False).returncode != 0:
            raise WorkspaceError(f"{start!r} is not a commit in {repo}")
        ignored = _ignored_entries(repo)
        environments = [name for name in _untracked_environments(repo) if name not in ignored]
        large = _large_untracked(repo, environments) if include == "working" else []
        tree = cls._starting_tree(repo, include, index_file, start, [*environments, *large])
        head_tree = _out(repo, "rev-parse", f"{start}^{{tree}}")
        uncommitted = _out(repo, "diff", "--name-only", "-z", head_tree, tree).split("\0") if tree != head_tree else []
        branch = f"gemma-agent/{uuid.uuid4().hex[:8]}"
        path = temp_root / repo.name
        _git(repo, "worktree", "add", "-q", "-b", branch, str(path), start)
        try:
            if tree != head_tree:
                _git(path, "read-tree", "-u", "--reset", tree)
                _git(path, "commit", "-q", "--no-verify", "-m", f"gemma-agent: starting state ({include})")
        except BaseException:
            _git(repo, "worktree", "remove", "--force", str(path), check=False)
            _git(repo, "branch", "-D", branch, check=False)
            raise
        shared = tuple(dict.fromkeys([*ignored, *environments, *large]))
        return cls(path, repo, _out(path, "rev-parse", "HEAD"), branch, temp_root, shared,
                   tuple(name for name in uncommitted if name))

    @staticmethod
    def _starting_tree(repo: Path, include: str, index_file: str | None, start: str, keep_out: list[str]) -> str:
        """The tree id of the user's state, read through a copy of their index (never the index itself).
        `keep_out` (environments, large untracked files) is not added."""
        if include == "head":
            return _out(repo, "rev-parse", f"{start}^{{tree}}")
        if index_file:
            git_index = Path(index_file) if os.path.isabs(index_file) else repo / index_file
        else:
            git_index = Path(_out(repo, "rev-parse", "--path-format=absolute", "--git-path", "index"))
        with tempfile.TemporaryDirectory(prefix="gemma-agent-index-") as scratch:
            index = os.path.join(scratch, "index")
            if git_index.exists():
                shutil.copyfile(git_index, index)
            else:
                _git(repo, "read-tree", "HEAD", index_file=index)
            if include == "working":
                specs = [".", *(f":(exclude,literal){name}" for name in keep_out)]
                _git(repo, "add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul", index_file=index,
                     input="\0".join(specs).encode("utf-8", errors="surrogateescape"))
            done = _git(repo, "write-tree", index_file=index, check=False)
            if done.returncode != 0:
                raise WorkspaceError(f"cannot read the staged state of {repo} (unresolved merge conflicts?): "
                                     f"{done.stderr.decode(errors='replace').strip()}")
            return done.stdout.decode().strip()

    @classmethod
    def _copy(cls, source: Path, temp_root: Path) -> Workspace:
        path = temp_root / source.name
        shutil.copytree(source, path, symlinks=True)
        _git(path, "init", "-q")
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "--no-verify", "--allow-empty", "-m", "gemma-agent: starting state (copy)")
        return cls(path, source, _out(path, "rev-parse", "HEAD"), None, temp_root)

    # -- checkpoints -------------------------------------------------------------------------------

    def _stage_all(self) -> None:
        self._require_open()
        _git(self.path, "add", "-A")

    def _has_uncommitted(self) -> bool:
        self._stage_all()
        return _git(self.path, "diff", "--cached", "--quiet", check=False).returncode != 0

    def checkpoint(self, message: str) -> str:
        """Commit the agent's edits so far; returns the commit id (the current one when nothing changed)."""
        if self._has_uncommitted():
            _git(self.path, "commit", "-q", "--no-verify", "-m", message or "gemma-agent checkpoint")
        return _out(self.path, "rev-parse", "HEAD")

    def undo(self) -> bool:
        """Go back one step: drop uncommitted edits if any, else the latest checkpoint. False if none."""
        if self._has_uncommitted():
            target = "HEAD"
        elif _out(self.path, "rev-parse", "HEAD") != self.base:
            target = "HEAD~1"
        else:
            return False
        _git(self.path, "reset", "-q", "--hard", target)
        _git(self.path, "clean", "-q", "-fd")
        return True

    def undo_preview(self) -> list[str]:
        """The files the next undo() would revert."""
        if self._has_uncommitted():
            return _names(_git(self.path, "diff", "--cached", "--name-only", "-z", "--no-renames", "HEAD").stdout)
        if _out(self.path, "rev-parse", "HEAD") == self.base:
            return []
        return _names(_git(self.path, "diff", "--name-only", "-z", "--no-renames", "HEAD~1", "HEAD").stdout)

    def diff(self, since: str | None = None) -> str:
        """A `git apply`-able patch (binary-safe) of everything the agent changed since the start (or `since`,
        e.g. `self.applied`: what is not applied yet)."""
        self._stage_all()
        patch = _git(self.path, "diff", "--cached", "--binary", "--full-index", "--no-renames",
                     since or self.base).stdout
        return patch.decode("utf-8", errors="surrogateescape")

    def changed_files(self, since: str | None = None) -> list[str]:
        self._stage_all()
        return _names(_git(self.path, "diff", "--cached", "--name-only", "-z", "--no-renames",
                           since or self.base).stdout)

    def view(self) -> View:
        """How sandboxed commands see this workspace: at the user's path, with the shared entries."""
        return View(path=str(self.source), shared=self.shared)

    # -- applying ----------------------------------------------------------------------------------

    def apply(self) -> list[str]:
        """Write the changes not applied yet into the user's working tree (never their index); returns the
        files. Later calls write only what changed since (the baseline advances).

        Refuses, changing nothing, when a touched file differs from what the agent started from (the user
        edited it since, or has uncommitted changes the agent did not see) or the patch does not apply.
        """
        files = self.changed_files(self.applied)
        if not files:
            return []
        conflicts = [name for name in files if not self._user_file_matches(name, self.applied)]
        if conflicts:
            raise WorkspaceError(
                "not applied: these files differ in your working tree from the state the agent started from "
                f"(edited since the session started, or uncommitted changes it did not see): {', '.join(conflicts)}. "
                "Commit or stash your edits and ask again, or use the saved patch.")
        patch = self.diff(self.applied).encode("utf-8", errors="surrogateescape")
        check = _git(self.source, "apply", "--check", "--binary", "-", input=patch, check=False)
        if check.returncode != 0:
            raise WorkspaceError(f"not applied: the patch does not apply cleanly: "
                                 f"{check.stderr.decode(errors='replace').strip()}")
        _git(self.source, "apply", "--binary", "-", input=patch)  # all-or-nothing (git-apply(1))
        self.applied = _out(self.path, "write-tree")  # staged by changed_files(): the state now applied
        return files

    def _user_file_matches(self, name: str, rev: str) -> bool:
        user = self.source / name
        done = _git(self.path, "cat-file", "blob", f"{rev}:{name}", check=False)
        if done.returncode != 0:  # the file is new in the agent's work: it must not exist in the user's tree
            return not os.path.lexists(user)
        if os.path.islink(user):
            return os.fsencode(os.readlink(user)) == done.stdout
        return user.is_file() and user.read_bytes() == done.stdout

    # -- lifetime ----------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise WorkspaceError("this workspace is closed")

    def close(self) -> None:
        """Remove the worktree (or copy) and its branch. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.branch is not None:
            _git(self.source, "worktree", "remove", "--force", str(self.path), check=False)
            _git(self.source, "worktree", "prune", check=False)
            _git(self.source, "branch", "-q", "-D", self.branch, check=False)
        shutil.rmtree(self._temp_root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace(path={str(self.path)!r}, source={str(self.source)!r}, branch={self.branch!r})"
