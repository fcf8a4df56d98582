"""Command tools: `run` (a shell command) and `run_tests` (the project's tests), both in the sandbox."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import sandbox
from tools.base import ToolError, tool
from tools.toolbox import ToolSettings

_TRACEBACK_LINES = 40  # last lines of each failure's traceback kept for the model
_TRACEBACK_CHARS = 3000


@dataclass
class TestReport:
    """A test run, parsed. Counts are zero when the output could not be parsed (see `parsed`)."""

    __test__ = False  # not a pytest test class

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    exit_code: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (test id, trimmed traceback)
    error_ids: list[str] = field(default_factory=list)  # the failures that are errors (setup, collection)
    output: str = ""
    duration: float = 0.0
    timed_out: bool = False
    parsed: bool = False

    def summary(self) -> str:
        status = "timed out" if self.timed_out else f"exit {self.exit_code}"
        line = f"tests: {self.passed} passed, {self.failed} failed, {self.errors} errors"
        if self.skipped:
            line += f", {self.skipped} skipped"
        return f"{line} ({status}) in {self.duration:.1f}s"


def _require_settings(settings: ToolSettings | None) -> ToolSettings:
    if settings is None:
        raise ToolError("internal: this tool needs the toolbox settings (workspace, sandbox options)")
    return settings


def _sandboxed(command: str, settings: ToolSettings, env: dict[str, str] | None = None) -> sandbox.SandboxResult:
    try:
        return sandbox.run(command, settings.workspace, timeout=settings.command_timeout,
                           no_sandbox=settings.no_sandbox, env={**settings.env, **(env or {})},
                           output_limit=settings.output_limit, view=settings.view)
    except sandbox.SandboxUnavailable as exc:
        raise ToolError(str(exc)) from exc
    except ValueError as exc:
        raise ToolError(str(exc)) from exc


@tool(
    "Run a shell command (via /bin/sh) in the repository root, inside a sandbox: no network, writes only "
    "inside the repository, a time limit and capped output. Returns the exit code, stdout and stderr.",
    {"command": {"type": "string", "description": "the shell command line, e.g. `ls src` or `make lint`"}},
    required=("command",),
)
def run(command: str, *, settings: ToolSettings | None = None) -> str:
    settings = _require_settings(settings)
    if not isinstance(command, str) or not command.strip():
        raise ToolError("command must be a non-empty shell command line")
    result = _sandboxed(command, settings)
    if result.timed_out:
        head = f"timed out after {settings.command_timeout:g}s and was killed; partial output follows"
    else:
        head = f"exit code {result.exit_code} in {result.duration:.1f}s"
    parts = [head]
    if result.truncated:
        parts.append(f"(output longer than {settings.output_limit} bytes per stream: middle omitted)")
    parts.append("--- stdout ---\n" + (result.stdout or "(empty)\n").rstrip("\n"))
    if result.stderr:
        parts.append("--- stderr ---\n" + result.stderr.rstrip("\n"))
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------
# run_tests

_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")
_SUMMARY_LINE = re.compile(r"^=*\s*(?:\d+ \w+(?:, )?)+.* in [\d.]+s")
_NO_TESTS = re.compile(r"^=*\s*no tests ran in [\d.]+s")
_SHORT_SUMMARY = re.compile(r"^(FAILED|ERROR) (.+)$")
_SECTION = re.compile(r"^={3,} (FAILURES|ERRORS) ={3,}$")
_OTHER_SECTION = re.compile(r"^={3,} .* ={3,}$")
_BLOCK_TITLE = re.compile(r"^_{3,} (.+?) _{3,}$")


def _pytest_command(test_command: str, selector: str | None, node_id: str | None = None) -> str:
    """The configured command, plus the selector (shell words) or one node id, plus report options pytest
    needs for parsing."""
    tokens = shlex.split(test_command)
    extra: list[str] = []
    if any(t == "pytest" or t.endswith("/pytest") for t in tokens):
        if not any(t.startswith("-r") for t in tokens):
            extra.append("-rfE")
        if not any(t.startswith("--tb") for t in tokens):
            extra.append("--tb=short")
        extra += ["--color=no", "-p", "no:cacheprovider"]  # no .pytest_cache in the agent's checkpoints
    if selector is not None:
        try:
            extra += shlex.split(selector)
        except ValueError as exc:
            raise ToolError(f"selector is not valid shell syntax ({exc}); pass a test path or node id") from exc
    if node_id is not None:
        extra.append(node_id)
    return " ".join([test_command, *map(shlex.quote, extra)])


def parse_pytest_output(output: str) -> TestReport:
    """Counts and failures from pytest's text output (the summary line and the FAILURES/ERRORS sections)."""
    report = TestReport(output=output)
    lines = output.splitlines()
    for line in reversed(lines):
        if _SUMMARY_LINE.match(line) or _NO_TESTS.match(line):
            for number, kind in _COUNT.findall(line):
                key = {"error": "errors", "errors": "errors"}.get(kind, kind)
                if key in ("passed", "failed", "errors", "skipped"):
                    setattr(report, key, int(number))
            report.parsed = True
            break
    summary = [(m.group(1), summary_id(m.group(2))) for m in map(_SHORT_SUMMARY.match, lines) if m]
    report.failures = _failure_blocks(lines, [test_id for _, test_id in summary])
    report.error_ids = [test_id for kind, test_id in summary if kind == "ERROR"]
    return report


def summary_id(rest: str) -> str:
    """The node id at the start of a short-summary line's text, which pytest follows with ` - message`.

    Node ids are `path::name[params]`: the path may hold spaces, a name cannot, and the parameters (spaces,
    quotes, brackets, escaped non-ASCII) run to their closing bracket."""
    sep = rest.find("::")
    if sep == -1:  # a module: "ERROR tests/test_x.py - ImportError ..."
        return rest.split(" - ", 1)[0]
    end = sep + 2
    while end < len(rest) and rest[end] not in " [":
        end += 1
    if end < len(rest) and rest[end] == "[":
        depth = 0
        for index in range(end, len(rest)):
            depth += {"[": 1, "]": -1}.get(rest[index], 0)
            if depth == 0:
                return rest[:index + 1]
        return rest
    return rest[:end]


def _failure_blocks(lines: list[str], ids: list[str]) -> list[tuple[str, str]]:
    blocks: list[tuple[str, list[str]]] = []
    in_section = False
    for line in lines:
        if _SECTION.match(line):
            in_section = True
            continue
        if in_section and _OTHER_SECTION.match(line):
            in_section = False
        elif in_section and (title := _BLOCK_TITLE.match(line)):
            blocks.append((title.group(1), []))
        elif in_section and blocks:
            blocks[-1][1].append(line)
    failures = [(_match_id(title, ids), _trim(body)) for title, body in blocks]
    seen = {test_id for test_id, _ in failures}
    failures += [(test_id, "") for test_id in ids if test_id not in seen]  # e.g. with --tb=no
    return failures


def _match_id(title: str, ids: list[str]) -> str:
    """Map a section title ("test_x", "TestA.test_b[1]", "ERROR at setup of test_x") to a node id."""
    name = re.sub(r"^ERROR (?:at \w+ of|collecting) ", "", title)
    for test_id in ids:
        if test_id == name or test_id.endswith("::" + name.replace(".", "::")):
            return test_id
    return name


def _trim(body: list[str]) -> str:
    kept = body[-_TRACEBACK_LINES:]
    text = "\n".join(kept).strip("\n")
    if len(text) > _TRACEBACK_CHARS:
        text = "..." + text[-_TRACEBACK_CHARS:]
    return ("...\n" if len(body) > len(kept) else "") + text


def run_test_suite(settings: ToolSettings, selector: str | None = None, *, node_id: str | None = None) -> TestReport:
    """Run the configured test command (plus `selector`, shell words, or `node_id`, one argument never split)
    in the sandbox and parse the result."""
    if selector is not None and (not isinstance(selector, str) or not selector.strip()):
        raise ToolError("selector must be a test path, node id or pytest option string, or omitted")
    command = _pytest_command(settings.test_command, selector, node_id)
    result = _sandboxed(command, settings, env={"PYTHONDONTWRITEBYTECODE": "1"})
    report = parse_pytest_output(result.stdout + ("\n" + result.stderr if result.stderr else ""))
    report.exit_code, report.duration, report.timed_out = result.exit_code, result.duration, result.timed_out
    return report


@tool(
    "Run the project's tests in the sandbox (pytest unless configured otherwise). Returns a one-line "
    "summary with counts, then each failing test's id and its trimmed traceback.",
    {"selector": {"type": "string", "description": "optional: a test file, node id (tests/test_a.py::test_b) "
                                                   "or pytest options such as `-k name`; omit to run all"}},
)
def run_tests(selector: str | None = None, *, settings: ToolSettings | None = None) -> str:
    report = run_test_suite(_require_settings(settings), selector)
    lines = [report.summary()]
    if report.timed_out:
        lines.append("the test run hit the time limit; run a narrower selector")
    for test_id, traceback in report.failures:
        kind = "ERROR" if test_id in report.error_ids else "FAILED"
        lines.append(f"\n{kind} {test_id}" + (f"\n{traceback}" if traceback else ""))
    if not report.parsed:
        tail = report.output[-2000:].strip()
        lines.append("could not find a pytest summary in the output; its end:\n" + (tail or "(no output)"))
    return "\n".join(lines)
