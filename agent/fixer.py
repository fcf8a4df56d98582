"""Headless fix: confirm a test fails, let the agent work in an isolated worktree until it passes without
regressions, and return the patch. Never touches the user's tree (applying is the caller's explicit step)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.backends import Backend
from agent.config import Config
from agent.context import ContextManager
from agent.project_python import ProjectPython, PythonNotFound, find_python
from agent.prompt import build_system_prompt
from agent.session import Budget, Listener, Session

OUTPUT_TAIL = 4000  # characters of test output shown to the model


class FixSetupError(Exception):
    """The fix cannot start (no such test, sandbox unavailable, not a git repository)."""


@dataclass
class FixReport:
    status: str  # fixed | not_fixed | already_passes
    test_id: str
    reason: str = ""
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    tests_before: dict[str, Any] = field(default_factory=dict)
    tests_after: dict[str, Any] | None = None
    patch: str = ""
    applied: list[str] | None = None  # files changed in the user's tree by --apply
    apply_error: str | None = None
    python: str = ""  # the interpreter the tests ran with
    uncommitted: list[str] = field(default_factory=list)  # the patch is on top of these uncommitted changes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _summary(report: Any) -> dict[str, Any]:
    return {
        "passed": report.passed, "failed": report.failed, "errors": report.errors, "skipped": report.skipped,
        "exit_code": report.exit_code, "failing": sorted({test for test, _ in report.failures}),
    }


def _passes(report: Any) -> bool:
    return report.exit_code == 0 and report.failed == 0 and report.errors == 0 and report.passed > 0


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL else "[...]\n" + text[-OUTPUT_TAIL:]


def tool_settings(config: Config, workspace: Any, python: ProjectPython | None = None) -> Any:
    """Tool settings bound to a workspace; git_diff/git_status compare against its starting commit. With the
    project's `python`, commands run in its environment and the sandbox shows it (see sandbox.view)."""
    import os

    from tools.toolbox import ToolSettings

    view = workspace.view() if config.sandbox and hasattr(workspace, "view") else None
    if view is not None and python is not None:
        view = dataclasses.replace(view, read_only=tuple(python.directories()))
    return ToolSettings(
        workspace=Path(workspace.path), no_sandbox=not config.sandbox,
        test_command=python.test_command(config.test_command) if python else config.test_command,
        command_timeout=config.command_timeout, base_ref=getattr(workspace, "base", None),
        env=python.environment(os.environ.get("PATH", "")) if python else {}, view=view,
    )


def project_python(repo: Path, config: Config) -> ProjectPython:
    """The interpreter the project's tests run with; FixSetupError when there is none."""
    try:
        return find_python(repo, config.python)
    except PythonNotFound as exc:
        raise FixSetupError(str(exc)) from None


def require_sandbox(config: Config, skip_hint: str = "--no-sandbox") -> None:
    """FixSetupError, one line, when commands must be sandboxed and cannot be on this machine."""
    import sandbox

    reason = sandbox.unavailable_reason() if config.sandbox else None
    if reason is not None:
        raise FixSetupError(f"no command sandbox: {reason}. Install bubblewrap (Debian/Ubuntu: apt-get install "
                            f"bubblewrap; Fedora: dnf install bubblewrap), or use {skip_hint} for code you trust")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def check_started(report: Any, command: str) -> None:
    """FixSetupError when the test command did not run pytest at all (not found, no pytest module...)."""
    if not report.parsed:
        raise FixSetupError(f"the test command could not run the tests (exit {report.exit_code}): "
                            f"{last_line(report.output)}; command: {command}")


def fix_test(
    repo: Path, test_id: str, config: Config, backend: Backend, *, listener: Listener | None = None,
    include: str = "working", apply: bool = False, python: ProjectPython | None = None,
) -> FixReport:
    """Run the whole fix in a fresh workspace copied from `repo` (`include`: working | index | head).

    With `apply`, a successful fix is applied to the user's tree; a refusal is recorded in `apply_error`."""
    from sandbox.workspace import Workspace

    started = time.monotonic()
    require_sandbox(config)
    python = python or project_python(repo, config)
    try:
        workspace = Workspace.create(repo, include=include)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FixSetupError(f"cannot create a worktree of {repo}: {exc}") from None
    with workspace:
        report = fix_in_workspace(workspace, test_id, config, backend, python, listener=listener, started=started)
        if apply and report.status == "fixed":
            try:
                report.applied = workspace.apply()
            except Exception as exc:  # apply refuses when the user's tree changed; the patch is still reported
                report.apply_error = str(exc) or type(exc).__name__
        return report


def fix_in_workspace(workspace: Any, test_id: str, config: Config, backend: Backend, python: ProjectPython, *,
                     listener: Listener | None = None, started: float | None = None,
                     before: Any = None) -> FixReport:
    """The fix loop in an existing workspace. `before`, a suite run in which `test_id` fails, is reused as
    the starting state instead of running the test and the suite again."""
    from tools.shell import run_test_suite
    from tools.toolbox import Toolbox

    started = time.monotonic() if started is None else started
    settings = tool_settings(config, workspace, python)
    failing_before = dict(before.failures) if before is not None else {}
    if test_id in failing_before:
        target_output = failing_before[test_id] or before.output
    else:
        target = run_test_suite(settings, node_id=test_id)
        check_started(target, settings.test_command)
        if target.passed + target.failed + target.errors == 0:
            raise FixSetupError(f"no test matched {test_id!r}; use a pytest id such as tests/test_mod.py::test_name "
                                f"({last_line(target.output)})")
        target_output = target.output
        if _passes(target):
            report = FixReport("already_passes", test_id, f"{test_id} already passes", python=python.executable)
            report.seconds = time.monotonic() - started
            return report
        before = run_test_suite(settings)
    report = FixReport("not_fixed", test_id, tests_before=_summary(before), python=python.executable,
                       uncommitted=list(getattr(workspace, "uncommitted", ())))
    budget = Budget(max_steps=config.max_steps, max_tokens=config.max_tokens, max_seconds=config.max_time,
                    max_output_tokens=config.max_output_tokens)
    session = Session(backend, Toolbox(settings), build_system_prompt(Path(workspace.path)), budget=budget,
                      listener=listener, context=ContextManager(config.context_tokens, config.max_output_tokens))
    last_diff = ""

    def changed_and_passing() -> bool:
        nonlocal last_diff
        diff = workspace.diff()
        if diff == last_diff:
            return False
        last_diff = diff
        return _passes(run_test_suite(settings, node_id=test_id))

    message = (f"The test {test_id} fails. Its output:\n{_tail(target_output)}\n\nFix the code so this test passes "
               "without breaking other tests. Change the test itself only if it is clearly wrong.")
    while True:
        remaining = config.max_steps - session.usage.steps
        session.budget.max_steps = remaining
        if config.max_time is not None:
            session.budget.max_seconds = max(0.0, config.max_time - (time.monotonic() - started))
        outcome = session.ask(message, should_stop=changed_and_passing) if remaining > 0 else None
        if outcome is not None and outcome.reason == "cancelled":
            raise KeyboardInterrupt  # Ctrl-C in a headless run ends it (exit 130); the workspace is removed
        current = run_test_suite(settings, node_id=test_id)
        if _passes(current):
            after = run_test_suite(settings)
            broken = sorted({t for t, _ in after.failures} - {t for t, _ in before.failures})
            if not broken and after.errors <= before.errors:
                report.status, report.tests_after = "fixed", _summary(after)
                report.reason, report.patch = f"{test_id} passes and no other test regressed", workspace.diff()
                break
            message = (f"{test_id} passes now, but these tests broke: {', '.join(broken) or 'collection errors'}."
                       f"\n{_tail(after.output)}\nFix them too.")
        else:
            message = f"{test_id} still fails:\n{_tail(current.output)}\nKeep going."
        if outcome is None or outcome.reason not in ("finished", "stopped"):
            report.tests_after = _summary(run_test_suite(settings))
            report.reason = outcome.detail if outcome else f"step budget of {config.max_steps} used up"
            report.patch = workspace.diff()
            break
    report.steps = session.usage.steps
    report.tokens_in, report.tokens_out = session.usage.tokens_in, session.usage.tokens_out
    report.seconds = round(time.monotonic() - started, 3)
    return report
