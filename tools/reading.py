"""Tools that look at the repository without changing it: read_file and list_files."""
from __future__ import annotations

import os

import pathspec

from tools.base import ToolError, resolve_path, tool
from tools.textfile import TextFileError, read_text, split_endings
from tools.walk import walk_files

READ_MAX_LINES = 400  # lines shown by one read_file call
READ_MAX_CHARS = 24_000  # characters shown by one read_file call (long lines count fully)
LINE_MAX_CHARS = 2_000  # a single line longer than this is cut, with a note
LIST_MAX_FILES = 500


@tool(
    "Read a text file with numbered lines. Shows at most 400 lines per call; use start_line/end_line "
    "(1-based, inclusive) to read other parts of a long file.",
    {
        "path": {"type": "string", "description": "File path relative to the repository root."},
        "start_line": {"type": "integer", "description": "First line to show (1-based). Default 1."},
        "end_line": {"type": "integer", "description": "Last line to show (inclusive). Default: as far as fits."},
    },
    required=("path",),
)
def read_file(path: str, start_line: int | None = None, end_line: int | None = None, *,
              workspace: str | os.PathLike[str] = ".") -> str:
    """Numbered lines `start_line`..`end_line` of a text file, capped; the footer says how to read more."""
    full = resolve_path(workspace, path, must_exist=True)
    if full.is_dir():
        raise ToolError(f"{path!r} is a directory; use list_files(path={path!r}) to see its files")
    try:
        lines = [line for line, _ in split_endings(read_text(full).text)]
    except TextFileError as exc:
        raise ToolError(f"cannot read {path!r}: {exc}") from None
    total = len(lines)
    if total == 0:
        return f"{path} is empty (0 lines)"
    first = 1 if start_line is None else start_line
    if first < 1 or first > total:
        raise ToolError(f"start_line={first} is out of range: {path} has {total} lines (1-{total})")
    if end_line is not None and end_line < first:
        raise ToolError(f"end_line={end_line} is before start_line={first}")
    last = total if end_line is None else min(end_line, total)
    width = len(str(min(last, first + READ_MAX_LINES - 1)))
    shown: list[str] = []
    used = 0
    for number in range(first, last + 1):
        text = lines[number - 1]
        if len(text) > LINE_MAX_CHARS:
            text = text[:LINE_MAX_CHARS] + f" ... [line cut: {len(lines[number - 1]):,} chars]"
        row = f"{number:>{width}}\t{text}"
        if shown and (len(shown) >= READ_MAX_LINES or used + len(row) > READ_MAX_CHARS):
            break
        shown.append(row)
        used += len(row) + 1
    shown_last = first + len(shown) - 1
    body = "\n".join(shown)
    if shown_last < total and (end_line is None or shown_last < end_line):
        body += (f"\n[showing lines {first}-{shown_last} of {total}; "
                 f"call read_file(path={path!r}, start_line={shown_last + 1}) for more]")
    elif first > 1 or shown_last < total:
        body += f"\n[showing lines {first}-{shown_last} of {total}]"
    return body


@tool(
    "List the files under a directory of the repository (recursively), skipping what .gitignore ignores. "
    "Optionally filter with a gitignore-style glob such as '*.py' or 'src/**/test_*.py'.",
    {
        "path": {"type": "string", "description": "Directory relative to the repository root. Default '.'."},
        "pattern": {"type": "string", "description": "Glob the listed paths must match, e.g. '*.py'."},
    },
)
def list_files(path: str = ".", pattern: str | None = None, *, workspace: str | os.PathLike[str] = ".") -> str:
    """Paths relative to the workspace root, one per line, capped at LIST_MAX_FILES."""
    root = resolve_path(workspace, ".")
    start = resolve_path(workspace, path, must_exist=True)
    if not start.is_dir():
        raise ToolError(f"{path!r} is a file, not a directory; use read_file(path={path!r}) to read it")
    matcher = compile_glob(pattern)
    base = "" if start == root else start.relative_to(root).as_posix() + "/"
    found: list[str] = []
    total = 0
    for rel in walk_files(root, start):
        if matcher is not None and not matcher.match_file(rel[len(base):]):
            continue
        total += 1
        if len(found) < LIST_MAX_FILES:
            found.append(rel)
    where = "the repository" if start == root else repr(path)
    if not found:
        suffix = f" matching {pattern!r}" if pattern else ""
        return f"no files{suffix} in {where} (ignored files are not listed)"
    text = "\n".join(found)
    if total > len(found):
        text += (f"\n[{total - len(found):,} more files not shown ({total:,} in all); "
                 "narrow it with path= or pattern=]")
    return text


def compile_glob(pattern: str | None) -> pathspec.GitIgnoreSpec | None:
    """A gitignore-style matcher: a pattern without '/' matches a name at any depth."""
    if pattern is None or not pattern.strip():
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines([pattern.strip()])
    except Exception as exc:  # pathspec raises several error types for malformed patterns
        raise ToolError(f"invalid glob {pattern!r}: {exc}") from None
