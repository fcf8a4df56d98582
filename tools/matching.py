"""Locating the text an edit should replace: exact first, then tolerant of whitespace and indentation.

Small local models mangle whitespace (tabs vs spaces, lost trailing spaces, a shifted indent, dropped blank
lines), so after the exact search fails the text is compared line by line with all whitespace runs collapsed,
ignoring blank lines, and the replacement is re-indented to the file's own indentation.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from math import gcd

_LEAD = re.compile(r"[ \t]*")


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the LF-normalized file text, to become `replacement`."""

    start: int
    end: int
    replacement: str


def _key(line: str) -> str:
    return " ".join(line.split())


def exact_spans(text: str, old: str, new: str) -> list[Span]:
    spans, at = [], text.find(old)
    while at != -1:
        spans.append(Span(at, at + len(old), new))
        at = text.find(old, at + len(old))
    return spans


def tolerant_spans(text: str, old: str, new: str) -> list[Span]:
    """Whole-line matches of `old` ignoring whitespace differences and blank lines; `new` re-indented."""
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    old_lines = old.split("\n")
    old_body = [line for line in old_lines if line.strip()]
    if not old_body:
        return []
    old_keys = [_key(line) for line in old_body]
    file_body = [(index, line) for index, line in enumerate(lines) if line.strip()]
    file_keys = [_key(line) for _, line in file_body]
    new_lines = _trim_blank_edges(new.split("\n"), old_lines)
    spans = []
    position = 0
    count = len(old_keys)
    while position + count <= len(file_keys):
        if file_keys[position:position + count] == old_keys:
            matched = file_body[position:position + count]
            first, last = matched[0][0], matched[-1][0]
            replacement = "\n".join(_adapt(new_lines, old_body, [line for _, line in matched]))
            end = offsets[last] + len(lines[last])
            if not new_lines and last + 1 < len(lines):
                end += 1  # deleting whole lines: take their newline too, leave no blank line behind
            spans.append(Span(offsets[first], end, replacement))
            position += count
        else:
            position += 1
    return spans


def _trim_blank_edges(new_lines: list[str], old_lines: list[str]) -> list[str]:
    """Drop the leading/trailing blank lines of `new` that mirror blank edges of `old` (those are not matched)."""
    def leading_blank(seq: list[str]) -> int:
        return next((i for i, line in enumerate(seq) if line.strip()), len(seq))

    head = min(leading_blank(old_lines), leading_blank(new_lines))
    tail = min(leading_blank(old_lines[::-1]), leading_blank(new_lines[::-1]))
    trimmed = new_lines[head:len(new_lines) - tail]
    return trimmed


def _adapt(new_lines: list[str], old_body: list[str], file_body: list[str]) -> list[str]:
    """Rewrite `new` in the file's whitespace: lines repeated from `old` come back exactly as in the file;
    other lines get the file's indentation for the same nesting depth."""
    verbatim: dict[str, str] = {}
    lead_map: dict[str, str] = {}
    for mine, theirs in zip(old_body, file_body):
        verbatim.setdefault(mine, theirs)
        lead_map.setdefault(_lead(mine), _lead(theirs))
    shifter = _Indenter(old_body, file_body, new_lines)
    out = []
    for line in new_lines:
        if line in verbatim:
            out.append(verbatim[line])
        elif not line.strip():
            out.append("")
        else:
            lead = _lead(line)
            out.append((lead_map[lead] if lead in lead_map else shifter.convert(lead)) + line[len(lead):])
    return out


def _lead(line: str) -> str:
    return _LEAD.match(line).group()  # type: ignore[union-attr]


def _columns(lead: str, tab: int) -> int:
    return len(lead.expandtabs(tab))


def _step(leads: list[str], tab: int, default: int) -> int:
    widths = sorted({_columns(lead, tab) for lead in leads})
    diffs = [b - a for a, b in zip(widths, widths[1:])] + [w for w in widths if w]
    step = 0
    for diff in diffs:
        step = gcd(step, diff)
    return step or default


class _Indenter:
    """Maps an indentation written by the model to the file's style, relative to the first matched line."""

    def __init__(self, old_body: list[str], file_body: list[str], new_lines: list[str]):
        model_leads = [_lead(line) for line in old_body + new_lines if line.strip()]
        file_leads = [_lead(line) for line in file_body]
        self.model_step = _step(model_leads, 4, 4)
        self.file_tabs = any("\t" in lead for lead in file_leads)
        self.file_step = 1 if self.file_tabs else _step(file_leads, 8, self.model_step)
        self.model_base = _columns(_lead(old_body[0]), 4)
        self.file_base = _lead(file_body[0])

    def convert(self, lead: str) -> str:
        levels = round((_columns(lead, 4) - self.model_base) / self.model_step)
        if self.file_tabs:
            base_tabs = self.file_base.count("\t")
            return "\t" * max(0, base_tabs + levels)
        return " " * max(0, _columns(self.file_base, 8) + levels * self.file_step)


def closest_region(text: str, old: str) -> tuple[int, int, float] | None:
    """The 1-based line range of `text` most similar to `old` (same number of lines) and its similarity."""
    lines = text.split("\n")
    old_lines = [line for line in old.split("\n")]
    while old_lines and not old_lines[-1].strip():
        old_lines.pop()
    while old_lines and not old_lines[0].strip():
        old_lines.pop(0)
    size = max(1, len(old_lines))
    if not lines or not old_lines:
        return None
    target = "\n".join(_key(line) for line in old_lines)
    keys = [_key(line) for line in lines]
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(target)
    rough = []
    for start in range(max(1, len(lines) - size + 1)):
        matcher.set_seq1("\n".join(keys[start:start + size]))
        rough.append((matcher.quick_ratio(), start))
    rough.sort(reverse=True)
    best = None
    for _, start in rough[:25]:
        matcher.set_seq1("\n".join(keys[start:start + size]))
        score = matcher.ratio()
        if best is None or score > best[2]:
            best = (start + 1, min(len(lines), start + size), score)
    return best
