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

INCLUDE_MODES = ("head", "index", "working")
_IDENTITY = ["-c", "user.name=gemma-agent", "-c", "user.email=gemma-agent@localhost",
             "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"]
# Variables that would point git at another repository or index than the one we name.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")


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


class Workspace:
    """The agent's private copy of a project. Create with `Workspace.create`; use as a context manager."""

    def __init__(self, path: Path, source: Path, base: str, branch: str | None, temp_root: Path):
        self.path = path
        self.source = source
        self.base = base  # commit of the starting state; diff() is relative to it
        self.branch = branch  # None for a copy of a non-git directory
        self._temp_root = temp_root
        self._closed = False

    @classmethod
    def create(cls, source_dir: str | os.PathLike[str], *, include: str = "working") -> Workspace:
        """A worktree (git source) or a copy (plain directory) holding the user's state per `include`."""
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
            return cls._worktree(repo, include, temp_root)
        except BaseException:
            shutil.rmtree(temp_root, ignore_errors=True)
            raise

    @classmethod
    def _worktree(cls, repo: Path, include: str, temp_root: Path) -> Workspace:
        if _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
            raise WorkspaceError(f"{repo} has no commits yet; commit once, then start the agent")
        tree = cls._starting_tree(repo, include)
        branch = f"gemma-agent/{uuid.uuid4().hex[:8]}"
        path = temp_root / repo.name
        _git(repo, "worktree", "add", "-q", "-b", branch, str(path), "HEAD")
        try:
            if tree != _out(path, "rev-parse", "HEAD^{tree}"):
                _git(path, "read-tree", "-u", "--reset", tree)
                _git(path, "commit", "-q", "--no-verify", "-m", f"gemma-agent: starting state ({include})")
        except BaseException:
            _git(repo, "worktree", "remove", "--force", str(path), check=False)
            _git(repo, "branch", "-D", branch, check=False)
            raise
        return cls(path, repo, _out(path, "rev-parse", "HEAD"), branch, temp_root)

    @staticmethod
    def _starting_tree(repo: Path, include: str) -> str:
        """The tree id of the user's state, read through a copy of their index (never the index itself)."""
        if include == "head":
            return _out(repo, "rev-parse", "HEAD^{tree}")
        git_index = Path(_out(repo, "rev-parse", "--path-format=absolute", "--git-path", "index"))
        with tempfile.TemporaryDirectory(prefix="gemma-agent-index-") as scratch:
            index = os.path.join(scratch, "index")
            if git_index.exists():
                shutil.copyfile(git_index, index)
            else:
                _git(repo, "read-tree", "HEAD", index_file=index)
            if include == "working":
                _git(repo, "add", "-A", "--", ".", index_file=index)
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

    def diff(self) -> str:
        """A `git apply`-able patch (binary-safe) of everything the agent changed since the start."""
        self._stage_all()
        patch = _git(self.path, "diff", "--cached", "--binary", "--full-index", "--no-renames", self.base).stdout
        return patch.decode("utf-8", errors="surrogateescape")

    def changed_files(self) -> list[str]:
        self._stage_all()
        names = _git(self.path, "diff", "--cached", "--name-only", "-z", "--no-renames", self.base).stdout
        return [n.decode("utf-8", errors="surrogateescape") for n in names.split(b"\0") if n]

    # -- applying ----------------------------------------------------------------------------------

    def apply(self) -> list[str]:
        """Write the agent's changes into the user's working tree (never their index); returns the files.

        Refuses, changing nothing, when a touched file differs from what the agent started from (the user
        edited it since, or has uncommitted changes the agent did not see) or the patch does not apply.
        """
        files = self.changed_files()
        if not files:
            return []
        conflicts = [name for name in files if not self._user_file_matches_base(name)]
        if conflicts:
            raise WorkspaceError(
                "not applied: these files differ in your working tree from the state the agent started from "
                f"(uncommitted changes or edits made since; or already applied): {', '.join(conflicts)}. "
                "Commit or stash them, or start a new session with --include working.")
        patch = self.diff().encode("utf-8", errors="surrogateescape")
        check = _git(self.source, "apply", "--check", "--binary", "-", input=patch, check=False)
        if check.returncode != 0:
            raise WorkspaceError(f"not applied: the patch does not apply cleanly: "
                                 f"{check.stderr.decode(errors='replace').strip()}")
        _git(self.source, "apply", "--binary", "-", input=patch)  # all-or-nothing (git-apply(1))
        return files

    def _user_file_matches_base(self, name: str) -> bool:
        user = self.source / name
        done = _git(self.path, "cat-file", "blob", f"{self.base}:{name}", check=False)
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
