"""read_file and list_files on real files in a temporary workspace."""
from __future__ import annotations

import os

import pytest

from tools.base import ToolError
from tools.reading import LIST_MAX_FILES, READ_MAX_LINES, list_files, read_file


def write(root, rel, text="", mode="w"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_read_file_numbers_lines(tmp_path):
    write(tmp_path, "a.py", "one\ntwo\nthree\n")
    assert read_file("a.py", workspace=tmp_path) == "1\tone\n2\ttwo\n3\tthree"


def test_read_file_range_and_note(tmp_path):
    write(tmp_path, "a.txt", "".join(f"line {i}\n" for i in range(1, 11)))
    out = read_file("a.txt", start_line=4, end_line=5, workspace=tmp_path)
    assert out.splitlines()[:2] == ["4\tline 4", "5\tline 5"]
    assert "showing lines 4-5 of 10" in out


def test_read_file_caps_long_files_and_says_how_to_continue(tmp_path):
    write(tmp_path, "big.txt", "".join(f"x{i}\n" for i in range(1, 1001)))
    out = read_file("big.txt", workspace=tmp_path)
    assert f"{READ_MAX_LINES}\tx{READ_MAX_LINES}" in out
    assert f"x{READ_MAX_LINES + 1}\n" not in out
    assert f"call read_file(path='big.txt', start_line={READ_MAX_LINES + 1})" in out
    rest = read_file("big.txt", start_line=READ_MAX_LINES + 1, workspace=tmp_path)
    assert rest.startswith(f"{READ_MAX_LINES + 1}\tx{READ_MAX_LINES + 1}")


def test_read_file_crlf_has_no_carriage_returns(tmp_path):
    write(tmp_path, "w.txt", "a\r\nb\r\n")
    assert read_file("w.txt", workspace=tmp_path) == "1\ta\n2\tb"


@pytest.mark.parametrize("start, end, message", [(0, None, "out of range"), (9, None, "out of range"),
                                                 (2, 1, "before start_line")])
def test_read_file_bad_ranges(tmp_path, start, end, message):
    write(tmp_path, "a.txt", "a\nb\n")
    with pytest.raises(ToolError, match=message):
        read_file("a.txt", start_line=start, end_line=end, workspace=tmp_path)


def test_read_file_failures(tmp_path):
    write(tmp_path, "bin.dat", b"\x00\x01\x02abc", mode="wb")
    (tmp_path / "d").mkdir()
    with pytest.raises(ToolError, match="does not exist"):
        read_file("missing.py", workspace=tmp_path)
    with pytest.raises(ToolError, match="binary"):
        read_file("bin.dat", workspace=tmp_path)
    with pytest.raises(ToolError, match="directory"):
        read_file("d", workspace=tmp_path)
    with pytest.raises(ToolError, match="outside the workspace"):
        read_file("../etc/passwd", workspace=tmp_path)
    with pytest.raises(ToolError, match="outside the workspace"):
        read_file("/etc/passwd", workspace=tmp_path)


def test_read_file_refuses_symlink_leaving_workspace(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.symlink(outside, workspace / "link.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        read_file("link.txt", workspace=workspace)


def test_read_file_empty_and_latin1(tmp_path):
    write(tmp_path, "empty.txt", "")
    write(tmp_path, "l1.txt", "caf\xe9\n".encode("latin-1"), mode="wb")
    assert "empty" in read_file("empty.txt", workspace=tmp_path)
    assert read_file("l1.txt", workspace=tmp_path) == "1\tcaf\xe9"


def test_list_files_respects_gitignore_at_every_level(tmp_path):
    write(tmp_path, ".gitignore", "*.log\nbuild/\n")
    write(tmp_path, "src/main.py")
    write(tmp_path, "src/debug.log")
    write(tmp_path, "build/out.py")
    write(tmp_path, "src/.gitignore", "gen_*.py\n!keep.log\n")
    write(tmp_path, "src/gen_table.py")
    write(tmp_path, "src/keep.log")
    write(tmp_path, ".git/config")
    listed = list_files(workspace=tmp_path).splitlines()
    assert listed == [".gitignore", "src/.gitignore", "src/keep.log", "src/main.py"]


def test_list_files_pattern_and_subdirectory(tmp_path):
    for rel in ["a.py", "pkg/b.py", "pkg/sub/c.py", "pkg/readme.md"]:
        write(tmp_path, rel)
    assert list_files(pattern="*.py", workspace=tmp_path).splitlines() == ["a.py", "pkg/b.py", "pkg/sub/c.py"]
    assert list_files("pkg", "*.md", workspace=tmp_path) == "pkg/readme.md"
    assert list_files("pkg", "sub/*.py", workspace=tmp_path) == "pkg/sub/c.py"
    assert "no files matching '*.rs'" in list_files(pattern="*.rs", workspace=tmp_path)


def test_list_files_caps_the_count(tmp_path):
    for i in range(LIST_MAX_FILES + 7):
        write(tmp_path, f"f{i:04d}.txt")
    lines = list_files(workspace=tmp_path).splitlines()
    assert len(lines) == LIST_MAX_FILES + 1
    assert "7 more files not shown" in lines[-1]


def test_list_files_failures(tmp_path):
    write(tmp_path, "a.py")
    with pytest.raises(ToolError, match="is a file"):
        list_files("a.py", workspace=tmp_path)
    with pytest.raises(ToolError, match="does not exist"):
        list_files("nope", workspace=tmp_path)
    with pytest.raises(ToolError, match="outside the workspace"):
        list_files("..", workspace=tmp_path)
