"""tools.shell: `run` and `run_tests` through the Toolbox and directly, on real projects and processes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tools import shell
from tools.base import ToolError
from tools.shell import parse_pytest_output, run_test_suite
from tools.toolbox import Toolbox, ToolSettings
from tests.sandbox_helpers import linux_only, require_sandbox  # noqa: F401

pytestmark = [linux_only, pytest.mark.usefixtures("require_sandbox")]

TESTS = '''
import pytest

def test_ok():
    assert 1 + 1 == 2

def test_also_ok():
    pass

def test_wrong_sum():
    total = 2 + 2
    assert total == 5, "arithmetic is broken"

class TestGroup:
    @pytest.mark.parametrize("n", [1, 2])
    def test_param(self, n):
        assert n == 1

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

def test_uses_broken(broken):
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
'''


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_things.py").write_text(TESTS)
    (tmp_path / "tests" / "test_fine.py").write_text("def test_fine():\n    assert True\n")
    return tmp_path


def settings_for(path: Path, **overrides) -> ToolSettings:
    """The project's Python is this test run's (agent.fixer.tool_settings finds it for real projects)."""
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    return ToolSettings(**{"workspace": path, "command_timeout": 60, "env": env, **overrides})


def test_tools_are_declared_in_the_default_toolbox(project):
    names = {d["name"] for d in Toolbox(settings_for(project)).declarations()}
    assert {"run", "run_tests"} <= names


def test_run_returns_exit_code_and_both_streams(project):
    text = Toolbox(settings_for(project)).call("run", {"command": "echo hello; echo oops >&2; exit 4"})
    assert text.startswith("exit code 4 in ")
    assert "--- stdout ---\nhello" in text and "--- stderr ---\noops" in text


def test_run_edits_the_workspace(project):
    Toolbox(settings_for(project)).call("run", {"command": "echo made > made.txt"})
    assert (project / "made.txt").read_text() == "made\n"


def test_run_reports_a_timeout(project):
    text = Toolbox(settings_for(project, command_timeout=1)).call("run", {"command": "echo partial; sleep 20"})
    assert text.startswith("timed out after 1s") and "partial" in text


def test_run_caps_output(project):
    text = Toolbox(settings_for(project, output_limit=2000)).call("run", {"command": "seq 1 100000"})
    assert "middle omitted" in text and "bytes of output omitted" in text
    assert len(text) < 3000 and text.rstrip().endswith("100000")


def test_run_rejects_bad_arguments(project):
    box = Toolbox(settings_for(project))
    assert box.call("run", {"command": "  "}).startswith("error: command must be a non-empty")
    assert box.call("run", {}).startswith("error: missing required argument(s) 'command'")
    with pytest.raises(ToolError):
        shell.run("", settings=settings_for(project))


def test_run_without_a_sandbox_explains_how_to_get_one(project, monkeypatch):
    monkeypatch.setattr("sandbox.runner.unavailable_reason", lambda: "bubblewrap (bwrap) is not installed")
    text = Toolbox(settings_for(project)).call("run", {"command": "touch should_not_exist"})
    assert text.startswith("error: no command sandbox is available") and "--no-sandbox" in text
    assert not (project / "should_not_exist").exists()
    text = Toolbox(settings_for(project, no_sandbox=True)).call("run", {"command": "touch exists"})
    assert text.startswith("exit code 0") and (project / "exists").exists()


def test_run_test_suite_counts_and_names_failures(project):
    report = run_test_suite(settings_for(project))
    assert (report.passed, report.failed, report.errors, report.skipped) == (4, 2, 1, 1)
    assert report.exit_code == 1 and report.parsed
    ids = [test_id for test_id, _ in report.failures]
    assert sorted(ids) == ["tests/test_things.py::TestGroup::test_param[2]",
                           "tests/test_things.py::test_uses_broken",
                           "tests/test_things.py::test_wrong_sum"]
    tracebacks = dict(report.failures)
    assert "arithmetic is broken" in tracebacks["tests/test_things.py::test_wrong_sum"]
    assert "fixture exploded" in tracebacks["tests/test_things.py::test_uses_broken"]
    assert not (project / ".pytest_cache").exists() and not list(project.rglob("__pycache__"))


def test_run_tests_text_starts_with_the_summary_line(project):
    text = Toolbox(settings_for(project)).call("run_tests", {})
    first = text.splitlines()[0]
    assert first.startswith("tests: 4 passed, 2 failed, 1 errors, 1 skipped (exit 1) in ")
    assert "FAILED tests/test_things.py::test_wrong_sum" in text
    assert "ERROR tests/test_things.py::test_uses_broken" in text
    assert "assert 4 == 5" in text


def test_run_tests_with_a_selector(project):
    text = Toolbox(settings_for(project)).call("run_tests", {"selector": "tests/test_fine.py"})
    assert text.startswith("tests: 1 passed, 0 failed, 0 errors (exit 0)")
    text = Toolbox(settings_for(project)).call("run_tests", {"selector": "tests/test_things.py::test_ok"})
    assert text.startswith("tests: 1 passed, 0 failed, 0 errors (exit 0)")
    text = Toolbox(settings_for(project)).call("run_tests", {"selector": "-k wrong_sum"})
    assert text.startswith("tests: 0 passed, 1 failed, 0 errors (exit 1)")


def test_run_tests_reports_a_collection_error(project):
    (project / "tests" / "test_broken.py").write_text("import no_such_module_xyz\n")
    report = run_test_suite(settings_for(project), "tests/test_broken.py")
    assert report.errors == 1 and report.exit_code == 2
    assert report.failures[0][0] == "tests/test_broken.py"
    assert "no_such_module_xyz" in report.failures[0][1]


def test_run_tests_with_a_custom_non_pytest_command(project):
    settings = settings_for(project, test_command=f"{sys.executable} -c 'import sys; sys.exit(3)'")
    text = Toolbox(settings).call("run_tests", {})
    assert text.startswith("tests: 0 passed, 0 failed, 0 errors (exit 3)")
    assert "could not find a pytest summary" in text


def test_run_tests_rejects_a_bad_selector(project):
    box = Toolbox(settings_for(project))
    assert box.call("run_tests", {"selector": "'unbalanced"}).startswith("error: selector is not valid")
    assert box.call("run_tests", {"selector": 3}).startswith("error: argument 'selector' must be string")


def test_parse_pytest_output_of_a_quiet_clean_run():
    report = parse_pytest_output("....\n4 passed, 1 warning in 0.31s\n")
    assert (report.passed, report.failed, report.errors, report.failures) == (4, 0, 0, [])
    assert parse_pytest_output("\nno tests ran in 0.01s\n").parsed
