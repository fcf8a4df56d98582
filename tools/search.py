"""The search tool: a regular expression over the repository's text files, like a bounded `git grep -n -E`."""
from __future__ import annotations

import os
import re

from tools.base import ToolError, resolve_path, tool
from tools.reading import compile_glob
from tools.textfile import TextFileError, read_text
from tools.walk import walk_files

MAX_MATCHES_PER_FILE = 20
MAX_MATCHES = 200
MAX_LINE_CHARS = 240


@tool(
    "Search the repository's text files with a Python regular expression (case-sensitive; prefix (?i) to "
    "ignore case). Returns 'path:line: text' for each matching line; skips ignored and binary files.",
    {
        "pattern": {"type": "string", "description": "Regular expression, e.g. 'def parse_\\w+'."},
        "path": {"type": "string", "description": "File or directory to search, relative to the root. Default '.'."},
        "glob": {"type": "string",
                 "description": "Only search files matching this glob (relative to path), e.g. '*.py'."},
    },
    required=("pattern",),
)
def search(pattern: str, path: str = ".", glob: str | None = None, *,
           workspace: str | os.PathLike[str] = ".") -> str:
    """Matching lines as `file:line: text`, at most MAX_MATCHES_PER_FILE per file and MAX_MATCHES in all."""
    if not pattern:
        raise ToolError("pattern must be a non-empty regular expression")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}; escape special characters "
                        "such as ( [ . * + ? with a backslash to match them literally") from None
    root = resolve_path(workspace, ".")
    start = resolve_path(workspace, path, must_exist=True)
    matcher = compile_glob(glob)
    if start.is_file():
        candidates = [start.relative_to(root).as_posix()]
        base = ""
    else:
        candidates = walk_files(root, start)
        base = "" if start == root else start.relative_to(root).as_posix() + "/"
    results: list[str] = []
    total = files_hit = 0
    capped_files: list[str] = []
    for rel in candidates:
        if matcher is not None and not matcher.match_file(rel[len(base):]):  # glob is relative to `path`
            continue
        try:
            text = read_text(root / rel).text
        except (TextFileError, OSError):
            continue
        if not regex.search(text):
            continue
        files_hit += 1
        in_file = 0
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.removesuffix("\r")  # same numbering as read_file: only \n ends a line
            if not regex.search(line):
                continue
            total += 1
            in_file += 1
            if in_file > MAX_MATCHES_PER_FILE:
                if in_file == MAX_MATCHES_PER_FILE + 1:
                    capped_files.append(rel)
                continue
            if len(results) < MAX_MATCHES:
                shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ..."
                results.append(f"{rel}:{number}: {shown}")
    if not results:
        where = "" if path in (".", "") else f" under {path!r}"
        only = f" in files matching {glob!r}" if glob else ""
        hint = "" if total else " (ignored and binary files are not searched; multi-line patterns need (?s))"
        return f"no matches for {pattern!r}{where}{only}{hint}"
    notes = []
    if capped_files:
        notes.append(f"only the first {MAX_MATCHES_PER_FILE} matches shown in: {', '.join(capped_files[:10])}"
                     + (" ..." if len(capped_files) > 10 else ""))
    if total > len(results):
        notes.append(f"{len(results)} of {total:,} matching lines in {files_hit:,} files shown; "
                     "narrow the pattern, path or glob to see the rest")
    return "\n".join(results + [f"[{note}]" for note in notes])
