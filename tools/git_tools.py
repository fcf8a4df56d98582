"""git_diff and git_status of the agent's workspace, through GitPython.

Both see new (untracked, not ignored) files too: they are staged into a throwaway index file
(GIT_INDEX_FILE), so the user's real index is never touched.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tools.base import ToolError, resolve_path, tool
from tools.toolbox import ToolSettings

if TYPE_CHECKING:
    import git

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's well-known id of the empty tree


@tool(
    "Show the changes made in the workspace as a unified diff (including new files), against the commit the "
    "session started from.",
    {},
)
def git_diff(*, workspace: str | os.PathLike[str] = ".", settings: ToolSettings | None = None) -> str:
    """Unified diff of the working tree (tracked changes and new files) against the base ref or HEAD."""
    repo = _open(workspace)
    base = _base(repo, settings)
    with _scratch_index(repo) as env:
        diff = repo.git.diff("--cached", "--no-color", "--no-ext-diff", base, env=env)
    if not diff.strip():
        return f"no changes against {_label(repo, base)}"
    limit = settings.output_limit if settings else 20_000
    if len(diff) > limit:
        cut = diff.rfind("\n", 0, limit)
        diff = diff[:cut if cut > 0 else limit] + (
            f"\n[diff cut at {limit:,} of {len(diff):,} characters; use read_file on the changed files "
            "or git_status for the list]")
    return diff


@tool(
    "Show the branch and which files are modified, added, deleted or untracked in the workspace.",
    {},
)
def git_status(*, workspace: str | os.PathLike[str] = ".", settings: ToolSettings | None = None) -> str:
    """`git status --short --branch`, plus the files changed since the base ref when one is set."""
    repo = _open(workspace)
    status = repo.git.status("--short", "--branch", "--untracked-files=all")
    lines = status.splitlines()
    text = status if len(lines) > 1 else status + "\nworking tree clean"
    if settings is not None and settings.base_ref:
        base = _base(repo, settings)
        with _scratch_index(repo) as env:
            changed = repo.git.diff("--cached", "--name-status", base, env=env)
        text += f"\nchanged since {settings.base_ref}:\n" + (changed or "(nothing)")
    return text


def _open(workspace: str | os.PathLike[str]) -> git.Repo:
    root = resolve_path(workspace, ".")
    try:
        # imported here: GitPython refuses to import when no git executable is installed, and that must
        # not take the other tools down with it
        import git
    except ImportError:
        raise ToolError("git is not available on this machine (no git executable on PATH); "
                        "install git to use this tool") from None
    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ToolError(f"the workspace {str(root)!r} is not a git repository") from None


def _base(repo: git.Repo, settings: ToolSettings | None) -> str:
    ref = settings.base_ref if settings is not None else None
    if ref:
        try:
            return repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except Exception:  # git.GitCommandError; git is imported lazily (see _open)
            raise ToolError(f"the base ref {ref!r} is not a commit in this repository") from None
    try:
        return repo.head.commit.hexsha
    except ValueError:  # no commit yet: everything is new
        return EMPTY_TREE


def _label(repo: git.Repo, base: str) -> str:
    return "an empty repository" if base == EMPTY_TREE else f"commit {base[:12]}"


@contextmanager
def _scratch_index(repo: git.Repo) -> Iterator[dict[str, str]]:
    """An environment whose GIT_INDEX_FILE is a copy of the index with every non-ignored file added."""
    scratch = Path(tempfile.mkdtemp(prefix="gemma-agent-index-"))
    try:
        index = scratch / "index"
        real_index = Path(repo.git_dir) / "index"
        if real_index.exists():
            shutil.copyfile(real_index, index)
        env = {"GIT_INDEX_FILE": str(index)}
        repo.git.add("--all", "--", ".", env=env)
        yield env
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
