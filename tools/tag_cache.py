"""On-disk cache of per-file tags, keyed by path, modification time and size.

Stored as JSON (never pickle: a cache inside a cloned repository must not be able to run code) under
`.git/gemma-agent/` when the workspace has a .git directory (invisible to `git status`), else under
`$GEMMA_AGENT_CACHE_DIR` or `$XDG_CACHE_HOME/gemma-agent` (default ~/.cache/gemma-agent), in a folder named
after a hash of the workspace path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tools.tags import Definition, FileTags, extract_tags, tagger_version
from tools.textfile import atomic_write

CACHE_FILE = "repo-map-tags.json"


def cache_dir_for(root: Path) -> Path:
    override = os.environ.get("GEMMA_AGENT_CACHE_DIR")
    if override is None and (root / ".git").is_dir():
        return root / ".git" / "gemma-agent"
    if override:
        base = Path(override)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gemma-agent"
    return base / hashlib.sha256(str(root).encode()).hexdigest()[:16]


class TagCache:
    """Tags of the files under one root; `tags_for` parses only files whose mtime or size changed."""

    def __init__(self, root: Path, cache_dir: Path | None = None):
        self.root = root
        self.path = (cache_dir or cache_dir_for(root)) / CACHE_FILE
        self.version = tagger_version()
        self.entries: dict[str, list] = self._load()
        self.dirty = False
        self.parsed = 0  # files parsed (cache misses) since this object was made

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != self.version:
            return {}
        entries = data.get("files")
        return entries if isinstance(entries, dict) else {}

    def tags_for(self, rel_path: str, language: str) -> FileTags | None:
        """The file's tags, from the cache when its mtime and size match; None if it cannot be read."""
        full = self.root / rel_path
        try:
            stat = full.stat()
        except OSError:
            return None
        key = [stat.st_mtime_ns, stat.st_size]
        entry = self.entries.get(rel_path)
        if entry is not None and entry[:2] == key:
            try:
                return FileTags([Definition(*item) for item in entry[2]], entry[3])
            except (TypeError, IndexError):
                pass  # a damaged entry: parse again
        try:
            source = full.read_bytes()
        except OSError:
            return None
        tags = extract_tags(source, language)
        self.parsed += 1
        rows = [[d.name, d.kind, d.line, d.signature, d.parent] for d in tags.definitions]
        self.entries[rel_path] = key + [rows, tags.references]
        self.dirty = True
        return tags

    def save(self, keep: set[str] | None = None) -> None:
        """Write the cache back if anything changed, dropping files not in `keep` (deleted ones)."""
        if keep is not None:
            stale = set(self.entries) - keep
            for rel_path in stale:
                del self.entries[rel_path]
            self.dirty = self.dirty or bool(stale)
        if not self.dirty:
            return
        payload = json.dumps({"version": self.version, "files": self.entries}, separators=(",", ":"))
        try:
            atomic_write(self.path, payload.encode("utf-8"))
        except OSError:
            return  # a read-only location only costs speed next time
        self.dirty = False
