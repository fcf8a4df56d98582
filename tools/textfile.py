"""Reading and writing text files without losing anything: encoding, BOM, newline style, permissions."""
from __future__ import annotations

import codecs
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAX_TEXT_BYTES = 5_000_000  # larger files are refused by the text tools (generated data, dumps)

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


@dataclass(frozen=True)
class TextFile:
    """A decoded file: `text` keeps the original newlines; `encoding` and `bom` say how to write it back."""

    text: str
    encoding: str
    bom: bytes = b""

    @property
    def newline(self) -> str:
        """The dominant line ending: CRLF when most lines end with it, else LF."""
        crlf = self.text.count("\r\n")
        return "\r\n" if crlf and crlf >= self.text.count("\n") - crlf else "\n"

    def encode(self, text: str) -> bytes:
        try:
            return self.bom + text.encode(self.encoding)
        except UnicodeEncodeError as exc:
            bad = text[exc.start:exc.end]
            raise TextFileError(
                f"the new text contains {bad!r}, which the file's encoding ({self.encoding}) cannot represent; "
                "use only characters that encoding supports"
            ) from exc


class TextFileError(Exception):
    """The file cannot be handled as text."""


def looks_binary(data: bytes) -> bool:
    """NUL bytes in the first 8 KiB mean binary (git's heuristic; check BOMs first, UTF-16 has NULs)."""
    return b"\0" in data[:8192]


def decode(data: bytes) -> TextFile:
    """Decode bytes: a BOM decides; otherwise UTF-8; otherwise Latin-1, which round-trips any byte exactly."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return TextFile(data[len(bom):].decode(encoding), encoding, bom)
            except UnicodeDecodeError as exc:
                raise TextFileError(f"it has a {encoding} byte-order mark but is not valid {encoding}") from exc
    if looks_binary(data):
        raise TextFileError("it looks like a binary file (it contains NUL bytes)")
    try:
        return TextFile(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        return TextFile(data.decode("latin-1"), "latin-1")


def read_text(path: Path) -> TextFile:
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise TextFileError(f"it is {size:,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit for text tools")
    return decode(path.read_bytes())


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename it over `path` (keeps the old mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_endings(text: str) -> list[tuple[str, str]]:
    """Split into (line, ending) pairs; the ending is "\\r\\n", "\\n" or "" (last line without newline)."""
    pairs = []
    for chunk in text.splitlines(keepends=True):
        if chunk.endswith("\r\n"):
            pairs.append((chunk[:-2], "\r\n"))
        elif chunk.endswith("\n"):
            pairs.append((chunk[:-1], "\n"))
        else:  # a lone \r or other separator stays part of the line content
            pairs.append((chunk, ""))
    return _merge_unsplit(pairs)


def _merge_unsplit(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # str.splitlines also splits on \r, \x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029; we only treat \n as a
    # line break, so glue those pieces back onto the following chunk.
    merged: list[tuple[str, str]] = []
    carry = ""
    for line, ending in pairs:
        if ending:
            merged.append((carry + line, ending))
            carry = ""
        else:
            carry += line
    if carry:
        merged.append((carry, ""))
    return merged


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n")


def restore_newlines(original: str, edited: str, newline: str) -> str:
    """Give `edited` (LF-only) the line endings of `original`: unchanged leading and trailing lines keep their
    exact original endings; changed lines get `newline`, the file's dominant style."""
    old = split_endings(original)
    new_lines = edited.split("\n")
    has_final = edited.endswith("\n")
    if has_final:
        new_lines.pop()
    old_lines = [line for line, _ in old]
    prefix = 0
    while prefix < min(len(old_lines), len(new_lines)) and old_lines[prefix] == new_lines[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < min(len(old_lines), len(new_lines)) - prefix
           and old_lines[-1 - suffix] == new_lines[-1 - suffix]):
        suffix += 1
    out = []
    for index, line in enumerate(new_lines):
        last = index == len(new_lines) - 1
        if last and not has_final:
            ending = ""
        elif index < prefix:
            ending = old[index][1] or newline
        elif index >= len(new_lines) - suffix:
            ending = old[len(old) - (len(new_lines) - index)][1] or newline
        else:
            ending = newline
        out.append(line + ending)
    return "".join(out)
