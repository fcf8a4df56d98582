"""Walk a workspace the way git sees it: .gitignore files (at every level) and .git/info/exclude are honoured."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pathspec

# Never descend into these, whatever the ignore files say: VCS internals and our own caches.
ALWAYS_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})


def _read_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


class IgnoreRules:
    """The stack of ignore files that apply below a workspace root.

    Each .gitignore's patterns are relative to its own directory; deeper files are consulted last, so their
    verdict (including `!negations`) wins, as in git.
    """

    def __init__(self, root: Path):
        self.root = root
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        info_exclude = root / ".git" / "info" / "exclude"
        self._base = _read_spec(info_exclude) if info_exclude.is_file() else None

    def _spec_for(self, rel_dir: str) -> pathspec.GitIgnoreSpec | None:
        if rel_dir not in self._specs:
            self._specs[rel_dir] = _read_spec(self.root / rel_dir / ".gitignore")
        return self._specs[rel_dir]

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        """Whether `rel_path` (posix, relative to the root) is ignored. Parent directories are not checked here."""
        parts = rel_path.split("/")
        verdict = False
        candidates: list[tuple[str, pathspec.GitIgnoreSpec | None]] = [("", self._base)]
        candidates += [("/".join(parts[:depth]), None) for depth in range(len(parts))]
        for index, (rel_dir, spec) in enumerate(candidates):
            spec = spec if index == 0 else self._spec_for(rel_dir)
            if spec is None:
                continue
            local = rel_path[len(rel_dir) + 1:] if rel_dir else rel_path
            result = spec.check_file(local + "/" if is_dir else local)
            if result.include is not None:
                verdict = result.include
        return verdict


def walk_files(root: Path, start: Path | None = None) -> Iterator[str]:
    """Yield posix paths, relative to `root`, of the files under `start` (default: root) that git would not
    ignore, depth first with each directory's entries sorted by name.

    Ignored directories are not entered; symlinked directories are not followed and file links leading
    outside the workspace are skipped.
    """
    root = root.resolve()
    start = (start or root).resolve()
    rel_start = start.relative_to(root).as_posix()
    yield from _walk(root, start, "" if rel_start == "." else rel_start + "/", IgnoreRules(root))


def _walk(root: Path, here: Path, prefix: str, rules: IgnoreRules) -> Iterator[str]:
    try:
        entries = sorted(os.scandir(here), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in ALWAYS_SKIPPED_DIRS and not rules.ignored(rel, is_dir=True):
                yield from _walk(root, Path(entry.path), rel + "/", rules)
        elif entry.is_file() and not rules.ignored(rel, is_dir=False):
            if entry.is_symlink() and not _inside(root, Path(entry.path)):
                continue
            yield rel


def _inside(root: Path, path: Path) -> bool:
    target = path.resolve()
    return target == root or root in target.parents
