"""The search tool over a real directory tree."""
from __future__ import annotations

import pytest

from tools.base import ToolError
from tools.search import MAX_MATCHES, MAX_MATCHES_PER_FILE, search


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "core.py").write_text("def parse_header(x):\n    return x\n\ndef parse_body(y):\n    pass\n")
    (tmp_path / "pkg" / "notes.md").write_text("parse_header is documented here\n")
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "parse_gen.py").write_text("def parse_generated(): pass\n")
    (tmp_path / ".gitignore").write_text("gen/\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00def parse_binary")
    (tmp_path / "win.py").write_bytes(b"a = 1\r\ndef parse_crlf():\r\n    pass\r\n")
    return tmp_path


def test_search_reports_file_line_text(repo):
    out = search(r"def parse_\w+", workspace=repo).splitlines()
    assert out == ["pkg/core.py:1: def parse_header(x):", "pkg/core.py:4: def parse_body(y):",
                   "win.py:2: def parse_crlf():"]  # sorted by path; CRLF stripped; same numbering as read_file


def test_search_glob_and_path(repo):
    assert search("parse_header", glob="*.md", workspace=repo) == "pkg/notes.md:1: parse_header is documented here"
    assert search("parse_header", path="pkg/core.py", workspace=repo) == "pkg/core.py:1: def parse_header(x):"
    assert search("(?i)PARSE_BODY", path="pkg", workspace=repo) == "pkg/core.py:4: def parse_body(y):"
    assert search("parse_body", path="pkg", glob="core.py", workspace=repo) == "pkg/core.py:4: def parse_body(y):"
    assert "no matches" in search("parse_body", glob="/core.py", workspace=repo)  # anchored at the root


def test_search_skips_ignored_and_binary_files(repo):
    assert "no matches" in search("parse_generated|parse_binary", workspace=repo)


def test_search_caps_per_file_and_total(tmp_path):
    (tmp_path / "a_many.txt").write_text("hit\n" * 50)
    for i in range(30):
        (tmp_path / f"f{i:02d}.txt").write_text("hit\n" * 10)
    out = search("hit", workspace=tmp_path).splitlines()
    many = [line for line in out if line.startswith("a_many.txt:")]
    assert len(many) == MAX_MATCHES_PER_FILE
    assert len([line for line in out if not line.startswith("[")]) == MAX_MATCHES
    assert any("only the first 20 matches shown in: a_many.txt" in line for line in out)
    assert out[-1].startswith(f"[{MAX_MATCHES} of 350 matching lines in 31 files shown")


def test_search_bad_input(repo):
    with pytest.raises(ToolError, match="invalid regular expression"):
        search("foo(", workspace=repo)
    with pytest.raises(ToolError, match="non-empty"):
        search("", workspace=repo)
    with pytest.raises(ToolError, match="outside the workspace"):
        search("x", path="../", workspace=repo)
