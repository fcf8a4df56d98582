"""The repo_map tool: an outline of the repository's most relevant definitions, within a token budget.

1. Tags: tree-sitter definitions and references of every supported, non-ignored file (tools.tags), cached on
   disk by path, mtime and size (tools.tag_cache).
2. Graph: one node per file; an edge A -> B for every identifier A references and B defines, weighted by
   sqrt(references) / (number of files defining it), times 10 for focus symbols, 0.1 for _private names and
   0.1 for names defined in more than five files (too generic to say much); in Python files, references to
   built-in names (str, print, append, ...) are not counted.
3. Rank: personalized PageRank (tools.ranking) toward the focus files and the files defining focus symbols;
   each file's rank flows to the definitions its in-edges point at. Focus symbols come first, then the focus
   files' own definitions, then the rest by that flow.
4. Render: the top definitions, grouped by file, as numbered signature lines (with their enclosing class or
   function), as many as fit in the budget (binary search).

Token counts are estimated as ceil(characters / 4) (no tokenizer is guaranteed at tool time); pass another
`count_tokens` to `build_repo_map` for an exact count.
"""
from __future__ import annotations

import builtins
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from tools.base import ToolError, resolve_path, tool
from tools.ranking import pagerank
from tools.tag_cache import TagCache
from tools.tags import FileTags, language_of
from tools.walk import walk_files

MAX_FILES = 20_000  # files beyond this (in walk order) are left out of the map, with a note
MAX_FILE_BYTES = 1_000_000  # larger files are usually generated; they are skipped
MIN_TOKENS, MAX_TOKENS = 64, 16_384

# In Python files, a reference to one of these almost always means the built-in (str(), x.append(), ...), not a
# same-named definition elsewhere in the repository; counting them would crown every module that shadows one.
PYTHON_BUILTIN_NAMES = frozenset(
    name for namespace in (builtins, str, bytes, list, dict, set, int, float, object) for name in dir(namespace)
)


def estimate_tokens(text: str) -> int:
    """About four characters per token: the usual average of BPE tokenizers on source code."""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class _Entry:
    """One ranked definition name in one file (all its definitions of that name are shown together)."""

    score: float
    path: str
    name: str


@tool(
    "Outline of the repository: the most relevant classes, functions and methods with their line numbers, "
    "ranked by how the code references them. Give focus (file paths or symbol names, comma-separated) to "
    "rank what is related to them first.",
    {
        "focus": {"type": "string", "description": "File paths and/or symbol names, comma-separated."},
        "max_tokens": {"type": "integer", "description": "Size budget of the outline in tokens. Default 1024."},
    },
)
def repo_map(focus: str | list[str] | None = None, max_tokens: int = 1024, *,
             workspace: str | os.PathLike[str] = ".") -> str:
    """The outline as text. `focus` is a path, a symbol, a list of them, or a comma-separated string."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < MIN_TOKENS:
        raise ToolError(f"max_tokens must be an integer of at least {MIN_TOKENS}, got {max_tokens!r}")
    return build_repo_map(resolve_path(workspace, "."), _focus_items(focus), min(max_tokens, MAX_TOKENS))


def _focus_items(focus: str | list[str] | None) -> list[str]:
    if focus is None:
        return []
    if isinstance(focus, str):
        focus = [focus]
    if not isinstance(focus, list) or not all(isinstance(item, str) for item in focus):
        raise ToolError("focus must be a file path or symbol name, a comma-separated string, or a list of them")
    return [part.strip() for item in focus for part in item.split(",") if part.strip()]


def source_files(root: Path) -> list[str]:
    """The files the map covers: non-ignored files of a supported language, under MAX_FILE_BYTES."""
    found = []
    for rel in walk_files(root):
        if language_of(rel) is None:
            continue
        try:
            if (root / rel).stat().st_size > MAX_FILE_BYTES:
                continue
        except OSError:
            continue
        found.append(rel)
    return found


def collect_tags(root: Path, files: Iterable[str],
                 cache_dir: Path | None = None) -> tuple[dict[str, FileTags], dict[str, str]]:
    """Tags of `files` (paths relative to `root`), through the on-disk cache, which is then saved; and the
    languages whose grammar could not be loaded (language -> reason), whose files are left out."""
    cache = TagCache(root, cache_dir)
    tags: dict[str, FileTags] = {}
    unavailable: dict[str, str] = {}
    for rel in files:
        language = language_of(rel) or ""
        if language in unavailable:
            continue
        try:
            file_tags = cache.tags_for(rel, language)
        except (ImportError, ValueError) as exc:  # a missing grammar wheel, or one this tree-sitter can't load
            unavailable[language] = f"{type(exc).__name__}: {exc}"
            continue
        if file_tags is not None:
            tags[rel] = file_tags
    cache.save(keep=set(tags))
    return tags, unavailable


def build_repo_map(root: Path, focus: list[str], max_tokens: int,
                   count_tokens: Callable[[str], int] = estimate_tokens,
                   cache_dir: Path | None = None) -> str:
    """The rendered map of the repository at `root`, at most `max_tokens` by `count_tokens`."""
    files = source_files(root)
    notes = []
    if len(files) > MAX_FILES:
        notes.append(f"only the first {MAX_FILES:,} of {len(files):,} source files are mapped")
        files = files[:MAX_FILES]
    if not files:
        return ("no source files in a supported language (Python, JavaScript, TypeScript, Go, Rust, Java, C, "
                "C++, Ruby) were found in the workspace")
    tags, unavailable = collect_tags(root, files, cache_dir)
    notes += [f"{language} files left out, its grammar failed to load ({reason})"
              for language, reason in unavailable.items()]
    focus_files, focus_symbols, unmatched = _resolve_focus(root, focus, tags)
    if unmatched:
        notes.append(f"focus matched no file or symbol: {', '.join(unmatched)}")
    ranked = rank_definitions(tags, focus_files, focus_symbols)
    header = f"Repository map: {len(tags)} files"
    if focus_files or focus_symbols:
        header += f", ranked toward {', '.join(sorted(focus_files) + sorted(focus_symbols))}"
    header += "; top definitions, as 'line: source'.\n"
    footer = "".join(f"[{note}]\n" for note in notes)

    def render_top(count: int) -> str:
        return header + render(ranked[:count], tags) + footer

    low, high = 0, len(ranked)
    while low < high:  # the largest count whose rendering fits the budget
        middle = (low + high + 1) // 2
        if count_tokens(render_top(middle)) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    if not ranked:
        return header + "no definitions found\n" + footer
    if low == 0:
        return f"max_tokens={max_tokens} is too small to show any definition; ask for a larger budget"
    return render_top(low).rstrip("\n")


def _resolve_focus(root: Path, items: list[str], tags: dict[str, FileTags]) -> tuple[set[str], set[str], list[str]]:
    defined = {d.name for file_tags in tags.values() for d in file_tags.definitions}
    referenced = {name for file_tags in tags.values() for name in file_tags.references}
    files, symbols, unmatched = set(), set(), []
    for item in items:
        rel = item.removeprefix("./").rstrip("/")
        try:
            full = resolve_path(root, rel)
        except ToolError:
            full = None
        if full is not None and full.exists():
            rel = full.relative_to(root.resolve()).as_posix()
            matched = {path for path in tags if path == rel or path.startswith(rel + "/") or rel == "."}
        else:
            matched = {path for path in tags if path.endswith("/" + rel)}
        if matched:
            files |= matched
            continue
        symbol = item.rsplit(".", 1)[-1] if "." in item and "/" not in item else item
        if symbol in defined or symbol in referenced:
            symbols.add(symbol)
        else:
            unmatched.append(item)
    return files, symbols, unmatched


def _identifier_weight(name: str, definers: int, focus_symbols: set[str]) -> float:
    weight = 1.0
    if name in focus_symbols:
        weight *= 10.0
    if name.startswith("_"):
        weight *= 0.1
    if definers > 5:
        weight *= 0.1
    return weight


def rank_definitions(tags: dict[str, FileTags], focus_files: set[str],
                     focus_symbols: set[str]) -> list[_Entry]:
    """Definition names per file, most relevant first."""
    paths = sorted(tags)
    index = {path: i for i, path in enumerate(paths)}
    definers: dict[str, list[int]] = defaultdict(list)
    for path in paths:
        for name in {d.name for d in tags[path].definitions}:
            definers[name].append(index[path])
    names = list(definers)
    name_id = {name: i for i, name in enumerate(names)}
    counts = np.array([len(definers[name]) for name in names], dtype=np.int64)
    first_definer = np.concatenate([[0], np.cumsum(counts)])
    definer_files = np.fromiter((f for name in names for f in definers[name]), dtype=np.int64,
                                count=int(first_definer[-1]))
    name_weight = np.array([_identifier_weight(name, len(definers[name]), focus_symbols) for name in names])
    # one row per (file, referenced identifier that some file defines)
    ref_file, ref_name, ref_count = [], [], []
    for path in paths:
        skipped = PYTHON_BUILTIN_NAMES if language_of(path) == "python" else frozenset()
        for name, count in tags[path].references.items():
            identifier = name_id.get(name)
            if identifier is not None and name not in skipped:
                ref_file.append(index[path])
                ref_name.append(identifier)
                ref_count.append(count)
    ref_file_a = np.array(ref_file, dtype=np.int64)
    ref_name_a = np.array(ref_name, dtype=np.int64)
    fan_out = counts[ref_name_a]
    ref_weight = name_weight[ref_name_a] * np.sqrt(np.array(ref_count, dtype=np.float64)) / fan_out
    # expand each row into one edge per defining file: (referencing file -> defining file, identifier)
    source = np.repeat(ref_file_a, fan_out)
    name_of_edge = np.repeat(ref_name_a, fan_out)
    weight = np.repeat(ref_weight, fan_out)
    offset_in_row = np.arange(len(source)) - np.repeat(np.cumsum(fan_out) - fan_out, fan_out)
    target = definer_files[first_definer[name_of_edge] + offset_in_row]
    keep = source != target
    source, target, name_of_edge, weight = source[keep], target[keep], name_of_edge[keep], weight[keep]

    jump = np.zeros(len(paths))
    for path in focus_files:
        jump[index[path]] = 1.0
    for name in focus_symbols:
        for file_index in definers.get(name, ()):
            jump[file_index] = 1.0
    pairs, pair_of_edge = np.unique(source * len(paths) + target, return_inverse=True)
    pair_weight = np.bincount(pair_of_edge, weights=weight)
    rank = pagerank(len(paths), pairs // len(paths), pairs % len(paths), pair_weight,
                    jump if jump.any() else None)
    out_weight = np.bincount(source, weights=weight, minlength=len(paths))
    flow = rank[source] * weight / np.where(out_weight[source] > 0, out_weight[source], 1.0)
    keys, key_of_edge = np.unique(target * len(names) + name_of_edge, return_inverse=True)
    key_flow = np.bincount(key_of_edge, weights=flow)
    scores: dict[tuple[str, str], float] = {
        (paths[key // len(names)], names[key % len(names)]): value
        for key, value in zip(keys.tolist(), key_flow.tolist())
    }
    for path in paths:
        defined_here = {d.name for d in tags[path].definitions}
        for name in defined_here:
            # definitions nobody references still rank by their file, far behind referenced ones
            bonus = rank[index[path]] * 1e-3 / len(defined_here)
            if name in focus_symbols:
                bonus += 1.0
            elif path in focus_files:
                bonus += 0.5  # the focus files' own outline comes first, then what they use

            scores[(path, name)] = scores.get((path, name), 0.0) + bonus
    entries = [_Entry(score, path, name) for (path, name), score in scores.items()]
    entries.sort(key=lambda entry: (-entry.score, entry.path, entry.name))
    return entries


def render(entries: list[_Entry], tags: dict[str, FileTags]) -> str:
    """Selected definitions grouped by file (files in order of their best entry), with enclosing definitions."""
    wanted: dict[str, set[str]] = {}
    for entry in entries:
        wanted.setdefault(entry.path, set()).add(entry.name)
    blocks = []
    for path, names in wanted.items():
        definitions = tags[path].definitions
        shown: set[int] = set()
        for position, definition in enumerate(definitions):
            if definition.name in names:
                while position != -1 and position not in shown:
                    shown.add(position)
                    position = definitions[position].parent
        lines = [f"{definitions[i].line}: {definitions[i].signature}" for i in sorted(shown)]
        blocks.append(path + ":\n" + "\n".join(lines) + "\n")
    return "".join(blocks)
