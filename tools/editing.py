"""Tools that change files: edit_file (search and replace) and write_file. Writes are atomic and keep the
file's encoding, byte-order mark, newline style and permissions."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from tools.base import ToolError, resolve_path, tool
from tools.matching import Span, closest_region, exact_spans, tolerant_spans
from tools.textfile import (TextFile, TextFileError, atomic_write, normalize_newlines, read_text,
                            restore_newlines)

# every non-blank line starts like read_file's output: a line number and a tab
_NUMBERED = re.compile(r"\A(?:[ ]*\d+\t[^\n]*\n|[ \t]*\n)*[ ]*\d+\t[^\n]*\n?\Z")
SNIPPET_CONTEXT = 2  # lines shown around an edit in the confirmation
SNIPPET_MAX_LINES = 30


@tool(
    "Replace text in a file: `old` must match the file exactly once (whitespace and indentation differences "
    "are tolerated when there is no exact match). Include a few surrounding lines to make `old` unique, or "
    "set replace_all to change every occurrence. To create a file, use write_file.",
    {
        "path": {"type": "string", "description": "File path relative to the repository root."},
        "old": {"type": "string", "description": "The exact text to replace, copied from the file."},
        "new": {"type": "string", "description": "The text to put in its place."},
        "replace_all": {"type": "boolean", "description": "Replace every occurrence. Default false."},
    },
    required=("path", "old", "new"),
)
def edit_file(path: str, old: str, new: str, replace_all: bool = False, *,
              workspace: str | os.PathLike[str] = ".") -> str:
    """Replace `old` by `new` in one file and describe the result (with a syntax check for Python files)."""
    full = _writable_path(workspace, path)
    if not full.exists():
        raise ToolError(f"{path!r} does not exist; use write_file(path={path!r}, content=...) to create it")
    if full.is_dir():
        raise ToolError(f"{path!r} is a directory, not a file")
    if not isinstance(old, str) or not old.strip():
        raise ToolError("old must contain the text to replace (copy it from read_file, without line numbers); "
                        "to replace the whole file use write_file")
    source = _read(full, path)
    text = normalize_newlines(source.text)
    old, new = normalize_newlines(old), normalize_newlines(new)
    if old == new:
        raise ToolError("old and new are identical: nothing would change")
    spans = exact_spans(text, old, new) or tolerant_spans(text, old, new)
    if not spans and _NUMBERED.match(old):
        # the model copied read_file's line numbers along with the text
        bare_old = _strip_numbers(old)
        bare_new = _strip_numbers(new) if _NUMBERED.match(new) else new
        spans = exact_spans(text, bare_old, bare_new) or tolerant_spans(text, bare_old, bare_new)
    if not spans:
        raise ToolError(_no_match_message(path, text, old))
    if len(spans) > 1 and not replace_all:
        places = ", ".join(_line_range(text, span) for span in spans[:8])
        raise ToolError(
            f"old matches {len(spans)} places in {path} (lines {places}{', ...' if len(spans) > 8 else ''}); "
            "include more surrounding lines so it matches once, or set replace_all=true to change them all"
        )
    edited = _apply(text, spans)
    if edited == text:
        raise ToolError("the edit would not change the file (new equals the matched text up to whitespace)")
    _save(full, source, edited)
    report = _describe_edit(path, text, edited, spans)
    return report + _syntax_note(full, path, edited)


@tool(
    "Create or overwrite a file with the given content (parent directories are created). Prefer edit_file "
    "for changing part of an existing file.",
    {
        "path": {"type": "string", "description": "File path relative to the repository root."},
        "content": {"type": "string", "description": "The complete new content of the file."},
    },
    required=("path", "content"),
)
def write_file(path: str, content: str, *, workspace: str | os.PathLike[str] = ".") -> str:
    """Write `content` atomically. An existing file keeps its encoding and newline style."""
    full = _writable_path(workspace, path)
    if full.is_dir():
        raise ToolError(f"{path!r} is a directory; give a file path")
    if not isinstance(content, str):
        raise ToolError("content must be a string")
    existed = full.exists()
    text = normalize_newlines(content)
    if existed:
        source = _read(full, path)
        _save(full, source, text)
    else:
        _save(full, TextFile("", "utf-8"), text, newline="\r\n" if "\r\n" in content else "\n")
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    verb = "overwrote" if existed else "created"
    return f"{verb} {path} ({lines} lines)" + _syntax_note(full, path, text)


def _strip_numbers(text: str) -> str:
    return re.sub(r"(?m)^[ ]*\d+\t", "", text)


def _writable_path(workspace: str | os.PathLike[str], path: str) -> Path:
    full = resolve_path(workspace, path)
    root = resolve_path(workspace, ".")
    if ".git" in full.relative_to(root).parts:
        raise ToolError(f"{path!r} is inside .git; the repository's internals cannot be edited")
    return full


def _read(full: Path, path: str) -> TextFile:
    try:
        return read_text(full)
    except TextFileError as exc:
        raise ToolError(f"cannot edit {path!r}: {exc}") from None
    except OSError as exc:
        raise ToolError(f"cannot read {path!r}: {exc.strerror}") from None


def _save(full: Path, source: TextFile, edited: str, newline: str | None = None) -> None:
    final = restore_newlines(source.text, edited, newline or source.newline)
    try:
        data = source.encode(final)
    except TextFileError as exc:
        raise ToolError(f"nothing was written: {exc}") from None
    try:
        atomic_write(full, data)
    except OSError as exc:
        raise ToolError(f"nothing was written: cannot write {full.name}: {exc.strerror}") from None


def _apply(text: str, spans: list[Span]) -> str:
    pieces, cursor = [], 0
    for span in spans:
        pieces += [text[cursor:span.start], span.replacement]
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _line_range(text: str, span: Span) -> str:
    first, last = _line_of(text, span.start), _line_of(text, max(span.start, span.end - 1))
    return str(first) if first == last else f"{first}-{last}"


def _numbered(lines: list[str], first: int, last: int) -> str:
    width = len(str(last))
    return "\n".join(f"{n:>{width}}\t{lines[n - 1]}" for n in range(first, last + 1))


def _no_match_message(path: str, text: str, old: str) -> str:
    message = f"old was not found in {path}, not even ignoring whitespace differences."
    region = closest_region(text, old)
    if region is None or region[2] < 0.3:
        return message + " Read the file again with read_file and copy the exact text (without line numbers)."
    first, last, _ = region
    lines = text.split("\n")
    return (f"{message} Did you mean lines {first}-{last}:\n{_numbered(lines, first, last)}\n"
            "Copy the text exactly as shown (without the line numbers) and retry.")


def _describe_edit(path: str, before: str, after: str, spans: list[Span]) -> str:
    if len(spans) > 1:
        return f"edited {path}: replaced {len(spans)} occurrences"
    span = spans[0]
    first = _line_of(after, span.start)
    last = first + span.replacement.count("\n")
    lines = after.split("\n")
    if after.endswith("\n"):
        lines.pop()  # the empty string after the final newline is not a line
    lo, hi = max(1, first - SNIPPET_CONTEXT), min(len(lines), last + SNIPPET_CONTEXT)
    hi = min(hi, lo + SNIPPET_MAX_LINES - 1)
    now = f"line {first}" if first == last else f"lines {first}-{last}"
    old = _line_range(before, span)
    summary = f"edited {path}: replaced {'line' if '-' not in old else 'lines'} {old} (now {now})"
    if not lines:
        return summary + "; the file is now empty"
    return summary + ". The file around the edit:\n" + _numbered(lines, lo, hi)


def _syntax_note(full: Path, path: str, text: str) -> str:
    """For Python files, compile the new text and report a syntax error (the file stays saved)."""
    if full.suffix not in (".py", ".pyi"):
        return ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings (e.g. invalid escapes) are not errors
            compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno or 1
        lines = text.split("\n")
        lo, hi = max(1, line - 2), min(len(lines), line + 2)
        return (f"\nwarning: {path} now has a syntax error at line {line}: {exc.msg}. The change was saved; "
                f"fix it with another edit_file call:\n{_numbered(lines, lo, hi)}")
    except ValueError as exc:  # e.g. source containing NUL bytes
        return f"\nwarning: {path} cannot be compiled: {exc}"
    return ""
