"""The default toolbox: every contract tool is declared, and bad calls come back as text, never raise."""
from __future__ import annotations

import pytest

from tools.toolbox import Toolbox, ToolSettings

CONTRACT = {
    "read_file": ({"path"}, {"path", "start_line", "end_line"}),
    "list_files": (set(), {"path", "pattern"}),
    "search": ({"pattern"}, {"pattern", "path", "glob"}),
    "repo_map": (set(), {"focus", "max_tokens"}),
    "edit_file": ({"path", "old", "new"}, {"path", "old", "new", "replace_all"}),
    "write_file": ({"path", "content"}, {"path", "content"}),
    "git_diff": (set(), set()),
    "git_status": (set(), set()),
}


@pytest.fixture
def toolbox(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_AGENT_CACHE_DIR", str(tmp_path / "cache"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.py").write_text("def f():\n    return 1\n")
    return Toolbox(ToolSettings(workspace=workspace))


def test_declarations_match_the_contract(toolbox):
    declared = {d["name"]: d for d in toolbox.declarations()}
    assert set(CONTRACT) <= set(declared)
    for name, (required, properties) in CONTRACT.items():
        parameters = declared[name]["parameters"]
        assert set(parameters["required"]) == required, name
        assert set(parameters["properties"]) == properties, name
        assert declared[name]["description"]


@pytest.mark.parametrize("name, arguments", [
    ("read_file", {"path": "missing.py"}),
    ("read_file", {"path": "a.py", "start_line": "ten"}),
    ("read_file", {}),
    ("list_files", {"path": "../.."}),
    ("search", {"pattern": "(unclosed"}),
    ("repo_map", {"max_tokens": -5}),
    ("edit_file", {"path": "a.py", "old": "not there at all", "new": "x"}),
    ("edit_file", {"path": "a.py", "old": "return 1", "new": "return 2", "typo": 1}),
    ("write_file", {"path": "/etc/passwd", "content": "x"}),
    ("git_diff", {}),
    ("no_such_tool", {}),
])
def test_bad_calls_return_error_text(toolbox, name, arguments):
    result = toolbox.call(name, arguments)
    assert isinstance(result, str) and result.startswith("error: ")


def test_calls_reach_the_workspace(toolbox):
    assert toolbox.call("read_file", {"path": "a.py"}) == "1\tdef f():\n2\t    return 1"
    assert toolbox.call("edit_file", {"path": "a.py", "old": "return 1", "new": "return 2"}).startswith("edited")
    assert "a.py:2:     return 2" == toolbox.call("search", {"pattern": "return 2"})
    assert toolbox.call("repo_map", {"focus": "a.py"}).endswith("a.py:\n1: def f():")
