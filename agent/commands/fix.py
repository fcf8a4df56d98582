"""`gemma-agent fix TEST_ID`: fix a failing test unattended; prints the diff, applies it, or writes it."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from agent.backends import BackendUnavailable
from agent.backends.factory import make_backend
from agent.commands.common import (UsageError, add_backend_arguments, check_backend_reachable, config_from_args,
                                   describe_arguments, error, find_repo)
from agent.fixer import FixSetupError, fix_test, project_python, require_sandbox
from agent.hook import git_path
from agent.session import Listener
from mlx_model.chat_format import ToolCall

EXIT_FIXED, EXIT_NOT_FIXED, EXIT_ALREADY_PASSES = 0, 1, 3

DESCRIPTION = """Fix a failing test without supervision. Confirms TEST_ID fails (in the sandbox), runs the agent
in an isolated git worktree until the test passes and no other test regresses, then prints the patch.
Your working tree is never touched unless you pass --apply. No input is read from stdin.

exit codes: 0 fixed, 1 not fixed within budget, 2 usage or setup error, 3 the test already passes"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fix", help="fix a failing test unattended (scripts, CI)", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_id", metavar="TEST_ID", help="pytest id, e.g. tests/test_calc.py::test_add")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository (default: current directory)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON report (status, steps, tokens in/out, time, tests before/after, patch)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--apply", action="store_true", help="apply the fix to your working tree")
    output.add_argument("--patch", type=Path, metavar="FILE", help="write the patch to FILE instead of printing it")
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


class ProgressLog(Listener):
    """Headless progress on stderr: one line per tool call and per notice."""

    def on_tool_call(self, call: ToolCall) -> None:
        print(f"  -> {call.name}({describe_arguments(call.arguments)})", file=sys.stderr)

    def on_notice(self, message: str) -> None:
        print(f"  ! {message}", file=sys.stderr)


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write bytes (text as UTF-8, undecodable bytes of a patch kept as they were) via a temporary file in the
    same directory and a rename, so a failure leaves neither a half-written file nor the temporary one."""
    path = path.expanduser()
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogateescape")
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the worktree and its branch are removed


def run(args: argparse.Namespace) -> int:
    try:
        if args.test_id.startswith("-"):
            raise UsageError(f"TEST_ID {args.test_id!r} looks like an option; give a pytest id such as "
                             "tests/test_mod.py::test_name")
        repo = find_repo(args.repo)
        config = config_from_args(args, repo)
        if args.patch and not args.patch.expanduser().resolve().parent.is_dir():
            raise UsageError(f"--patch {args.patch}: directory {args.patch.parent} does not exist")
        backend = make_backend(config)
        check_backend_reachable(config)
        require_sandbox(config)
        python = project_python(repo, config)
    except (UsageError, BackendUnavailable, FixSetupError) as exc:
        return error(str(exc))
    print(f"gemma-agent: tests run with {python.describe()}", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        report = fix_test(repo, args.test_id, config, backend, listener=ProgressLog(), apply=args.apply,
                          python=python)
    except FixSetupError as exc:
        return error(str(exc))
    except SystemExit as exc:
        print("gemma-agent: terminated; the agent's worktree was removed, your files are untouched", file=sys.stderr)
        return int(exc.code or 143)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _report(args, repo, report)


def _report(args: argparse.Namespace, repo: Path, report) -> int:
    code = {"fixed": EXIT_FIXED, "already_passes": EXIT_ALREADY_PASSES}.get(report.status, EXIT_NOT_FIXED)
    payload = report.to_json()
    status = report.status
    if report.apply_error is not None:
        saved = git_path(repo, "gemma-agent/unapplied-fix.patch")
        saved.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(saved, report.patch)
        payload["patch_file"] = str(saved)
        print(f"gemma-agent: not applied: {report.apply_error}", file=sys.stderr)
        print(f"gemma-agent: the fix is saved as {saved}; apply it later with: git apply {saved}", file=sys.stderr)
        code, status = EXIT_NOT_FIXED, "not_applied"
    if report.status == "fixed" and args.patch:
        write_atomically(args.patch, report.patch)
        payload["patch_file"] = str(args.patch)
    if args.json:
        print(json.dumps(payload, indent=2))
    elif report.status == "fixed" and not args.apply and not args.patch:
        sys.stdout.flush()
        sys.stdout.buffer.write(report.patch.encode("utf-8", errors="surrogateescape"))
        sys.stdout.flush()
    if report.uncommitted and report.patch:
        print(f"gemma-agent: note: the patch is made on top of your uncommitted changes to "
              f"{', '.join(report.uncommitted[:5])}{' ...' if len(report.uncommitted) > 5 else ''}", file=sys.stderr)
    if report.applied:
        print(f"gemma-agent: applied to your working tree: {', '.join(report.applied)}", file=sys.stderr)
    reason = "the fix was not applied to your working tree" if status == "not_applied" else report.reason
    print(f"gemma-agent fix: {status}: {reason} ({report.steps} steps, "
          f"{report.tokens_in} tokens in / {report.tokens_out} out, {report.seconds:.1f}s)", file=sys.stderr)
    return code
