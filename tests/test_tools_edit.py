"""edit_file and write_file on real files, including the messy inputs small models produce."""
from __future__ import annotations

import os
import stat

import pytest

from tools.base import ToolError
from tools.editing import edit_file, write_file


def put(root, rel, data: bytes):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def no_temp_files(root):
    return not [p for p in root.rglob("*.tmp")]


def test_exact_edit_reports_the_new_region(tmp_path):
    path = put(tmp_path, "m.py", b"def f():\n    return 1\n\n\ndef g():\n    return 2\n")
    out = edit_file("m.py", "    return 2", "    return 3", workspace=tmp_path)
    assert path.read_bytes() == b"def f():\n    return 1\n\n\ndef g():\n    return 3\n"
    assert "replaced line 6" in out and "6\t    return 3" in out
    assert no_temp_files(tmp_path)


def test_ambiguous_match_lists_places_and_changes_nothing(tmp_path):
    original = b"x = 1\ny = 2\nx = 1\n"
    path = put(tmp_path, "a.py", original)
    with pytest.raises(ToolError, match=r"matches 2 places in a\.py \(lines 1, 3\).*replace_all"):
        edit_file("a.py", "x = 1", "x = 5", workspace=tmp_path)
    assert path.read_bytes() == original


def test_replace_all(tmp_path):
    path = put(tmp_path, "a.py", b"x = 1\ny = 2\nx = 1\n")
    assert "replaced 2 occurrences" in edit_file("a.py", "x = 1", "x = 5", replace_all=True, workspace=tmp_path)
    assert path.read_bytes() == b"x = 5\ny = 2\nx = 5\n"


def test_tabs_in_file_spaces_from_model(tmp_path):
    path = put(tmp_path, "t.py", b"class A:\n\tdef f(self):\n\t\tif x:\n\t\t\treturn 1\n\t\treturn 0\n")
    old = "    def f(self):\n        if x:\n            return 1\n"
    new = "    def f(self):\n        if x:\n            log()\n            return 1\n"
    edit_file("t.py", old, new, workspace=tmp_path)
    assert path.read_bytes() == b"class A:\n\tdef f(self):\n\t\tif x:\n\t\t\tlog()\n\t\t\treturn 1\n\t\treturn 0\n"


def test_model_drops_the_indentation(tmp_path):
    path = put(tmp_path, "i.py", b"def f():\n    if a:\n        b()\n    return c\n")
    edit_file("i.py", "if a:\n    b()", "if a:\n    b()\nelse:\n    d()", workspace=tmp_path)
    assert path.read_text() == "def f():\n    if a:\n        b()\n    else:\n        d()\n    return c\n"


def test_crlf_file_keeps_crlf_and_untouched_lines_stay_byte_identical(tmp_path):
    path = put(tmp_path, "w.py", b"a = 1\r\nb = 2\r\nc = 3\r\n")
    edit_file("w.py", "b = 2\n", "b = 20\nb2 = 21\n", workspace=tmp_path)
    assert path.read_bytes() == b"a = 1\r\nb = 20\r\nb2 = 21\r\nc = 3\r\n"
    edit_file("w.py", "a = 1\r\nb = 20", "a = 10\r\nb = 20", workspace=tmp_path)  # CRLF from the model too
    assert path.read_bytes() == b"a = 10\r\nb = 20\r\nb2 = 21\r\nc = 3\r\n"


def test_mixed_newlines_outside_the_edit_are_kept(tmp_path):
    path = put(tmp_path, "m.txt", b"one\r\ntwo\nthree\r\nfour\n")
    edit_file("m.txt", "three", "THREE", workspace=tmp_path)
    assert path.read_bytes() == b"one\r\ntwo\nTHREE\r\nfour\n"


def test_trailing_whitespace_differences(tmp_path):
    path = put(tmp_path, "s.py", b"def f():   \n    x = 1  \n    return x\n")
    edit_file("s.py", "def f():\n    x = 1\n", "def f():\n    x = 2\n", workspace=tmp_path)
    assert path.read_bytes() == b"def f():   \n    x = 2\n    return x\n"


def test_model_drops_blank_lines_and_collapses_spaces(tmp_path):
    path = put(tmp_path, "b.py", b"import os\n\n\ndef f(a,  b):\n\n    return a\n")
    edit_file("b.py", "import os\ndef f(a, b):\n    return a", "import os\ndef f(a, b):\n    return b",
              workspace=tmp_path)
    text = path.read_text()
    assert text.endswith("    return b\n") and text.startswith("import os\n")


def test_tolerant_match_that_is_ambiguous_fails(tmp_path):
    original = b"if a:\n    go()\nif b:\n  if a:\n      go()\n"
    path = put(tmp_path, "d.py", original)
    with pytest.raises(ToolError, match="matches 2 places"):
        edit_file("d.py", "if a:\n  go()", "if a:\n  stop()", workspace=tmp_path)
    assert path.read_bytes() == original


def test_no_match_shows_the_closest_candidate(tmp_path):
    lines = [f"value_{i} = compute({i})" for i in range(1, 30)]
    lines[11] = "total = compute_total(items, tax=0.2)"
    put(tmp_path, "c.py", ("\n".join(lines) + "\n").encode())
    with pytest.raises(ToolError) as info:
        edit_file("c.py", "total = compute_total(items, tax=0.25)", "total = 0", workspace=tmp_path)
    message = str(info.value)
    assert "not found" in message and "Did you mean lines 12-12" in message
    assert "12\ttotal = compute_total(items, tax=0.2)" in message


def test_no_match_and_nothing_similar(tmp_path):
    put(tmp_path, "c.py", b"a = 1\n")
    with pytest.raises(ToolError, match="read_file"):
        edit_file("c.py", "zzzzzzzzzzzzzzzzzzzzzz qqqqqqqqqq", "x", workspace=tmp_path)


def test_python_syntax_error_is_reported(tmp_path):
    path = put(tmp_path, "p.py", b"def f():\n    return 1\n")
    out = edit_file("p.py", "return 1", "return (1", workspace=tmp_path)
    assert "syntax error at line 2" in out
    assert path.read_text() == "def f():\n    return (1\n"
    assert "syntax error" not in edit_file("p.py", "return (1", "return (1)", workspace=tmp_path)


def test_encoding_bom_and_mode_are_kept(tmp_path):
    latin = put(tmp_path, "l.txt", "caf\xe9 = 1\n".encode("latin-1"))
    edit_file("l.txt", "= 1", "= 2", workspace=tmp_path)
    assert latin.read_bytes() == "caf\xe9 = 2\n".encode("latin-1")
    utf16 = put(tmp_path, "u.txt", "\ufeffhello\r\nw\xf6rld\r\n".encode("utf-16-le"))
    edit_file("u.txt", "w\xf6rld", "welt", workspace=tmp_path)
    assert utf16.read_bytes() == "\ufeffhello\r\nwelt\r\n".encode("utf-16-le")
    bom8 = put(tmp_path, "b.py", b"\xef\xbb\xbfx = 1\n")
    edit_file("b.py", "x = 1", "x = 2", workspace=tmp_path)
    assert bom8.read_bytes() == b"\xef\xbb\xbfx = 2\n"
    script = put(tmp_path, "run.sh", b"echo hi\n")
    script.chmod(0o755)
    edit_file("run.sh", "hi", "bye", workspace=tmp_path)
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


def test_unencodable_text_writes_nothing(tmp_path):
    original = "caf\xe9\n".encode("latin-1")
    path = put(tmp_path, "l.txt", original)
    with pytest.raises(ToolError, match="nothing was written.*latin-1"):
        edit_file("l.txt", "caf", "\u2603 caf", workspace=tmp_path)
    assert path.read_bytes() == original
    assert no_temp_files(tmp_path)


def test_edit_failures(tmp_path):
    put(tmp_path, "a.py", b"x = 1\n")
    put(tmp_path, "bin", b"\x00\x01")
    with pytest.raises(ToolError, match="write_file"):
        edit_file("new.py", "a", "b", workspace=tmp_path)
    with pytest.raises(ToolError, match="identical"):
        edit_file("a.py", "x = 1", "x = 1", workspace=tmp_path)
    with pytest.raises(ToolError, match="old must contain"):
        edit_file("a.py", "  \n", "y", workspace=tmp_path)
    with pytest.raises(ToolError, match="binary"):
        edit_file("bin", "a", "b", workspace=tmp_path)
    with pytest.raises(ToolError, match="outside the workspace"):
        edit_file("../a.py", "x", "y", workspace=tmp_path)
    with pytest.raises(ToolError, match="inside .git"):
        write_file(".git/hooks/pre-commit", "#!/bin/sh\n", workspace=tmp_path)
    assert not (tmp_path / ".git").exists()


def test_write_file_creates_parents_and_reports(tmp_path):
    out = write_file("pkg/sub/new.py", "def f():\n    return 1\n", workspace=tmp_path)
    assert out == "created pkg/sub/new.py (2 lines)"
    assert (tmp_path / "pkg/sub/new.py").read_text() == "def f():\n    return 1\n"
    assert "syntax error" in write_file("pkg/bad.py", "def (:\n", workspace=tmp_path)
    assert no_temp_files(tmp_path)


def test_write_file_overwrite_keeps_crlf_and_encoding(tmp_path):
    path = put(tmp_path, "w.txt", "\xe9\r\n".encode("latin-1"))
    assert write_file("w.txt", "\xe8\nb\n", workspace=tmp_path).startswith("overwrote w.txt (2 lines)")
    assert path.read_bytes() == "\xe8\r\nb\r\n".encode("latin-1")


def test_write_file_through_symlink_leaving_workspace_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.symlink(outside, workspace / "out")
    with pytest.raises(ToolError, match="outside the workspace"):
        write_file("out/x.txt", "data", workspace=workspace)
    assert not (outside / "x.txt").exists()


def test_failed_rename_leaves_original_and_no_temp(tmp_path, monkeypatch):
    path = put(tmp_path, "a.txt", b"keep me\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ToolError, match="nothing was written"):
        edit_file("a.txt", "keep", "lose", workspace=tmp_path)
    assert path.read_bytes() == b"keep me\n"
    assert no_temp_files(tmp_path)


def test_deleting_lines_with_sloppy_whitespace_leaves_no_blank_line(tmp_path):
    path = put(tmp_path, "d.py", b"a = 1\n\tb = 2  \nc = 3\n")
    edit_file("d.py", "    b = 2\n", "", workspace=tmp_path)  # wrong indent: tolerant match
    assert path.read_bytes() == b"a = 1\nc = 3\n"


def test_line_numbers_copied_from_read_file_are_ignored(tmp_path):
    path = put(tmp_path, "n.py", b"def f():\n    a = 1\n    return a\n")
    edit_file("n.py", " 2\t    a = 1\n 3\t    return a\n", "2\t    a = 2\n3\t    return a\n", workspace=tmp_path)
    assert path.read_bytes() == b"def f():\n    a = 2\n    return a\n"
    path.write_bytes(b"x = 1\n7\tvalue\n")
    edit_file("n.py", "7\tvalue", "7\tother", workspace=tmp_path)  # an exact match wins over number stripping
    assert path.read_bytes() == b"x = 1\n7\tother\n"


def test_model_uses_four_space_indents_in_a_two_space_file(tmp_path):
    path = put(tmp_path, "two.py", b"class A:\n  def f(self):\n    return 1\n")
    old = "    def f(self):\n        return 1"
    new = "    def f(self):\n        if self:\n            return 1\n        return 0"
    edit_file("two.py", old, new, workspace=tmp_path)
    assert path.read_text() == "class A:\n  def f(self):\n    if self:\n      return 1\n    return 0\n"
