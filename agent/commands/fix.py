"""`gemma-agent fix TEST_ID`: fix a failing test unattended; prints the diff, applies it, or writes it."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from agent.backends import BackendUnavailable
from agent.backends.factory import make_backend
from agent.commands.common import UsageError, add_backend_arguments, config_from_args, error, find_repo
from agent.fixer import FixSetupError, fix_test
from agent.session import Listener
from agent.chat_format import ToolCall

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
        args = ", ".join(f"{k}={str(v)[:40]!r}" for k, v in call.arguments.items())
        print(f"  -> {call.name}({args})", file=sys.stderr)

    def on_notice(self, message: str) -> None:
        print(f"  ! {message}", file=sys.stderr)


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and a rename, so a failure leaves no half-written file."""
    path = path.expanduser()
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temp, path)


def run(args: argparse.Namespace) -> int:
    try:
        repo = find_repo(args.repo)
        config = config_from_args(args, repo)
        if args.patch and not args.patch.expanduser().resolve().parent.is_dir():
            raise UsageError(f"--patch {args.patch}: directory {args.patch.parent} does not exist")
        backend = make_backend(config)
    except (UsageError, BackendUnavailable) as exc:
        return error(str(exc))
    try:
        report = fix_test(repo, args.test_id, config, backend, listener=ProgressLog(), apply=args.apply)
    except FixSetupError as exc:
        return error(str(exc))
    code = {"fixed": EXIT_FIXED, "already_passes": EXIT_ALREADY_PASSES}.get(report.status, EXIT_NOT_FIXED)
    payload = report.to_json()
    if report.apply_error is not None:
        saved = repo / ".git" / "gemma-agent" / "unapplied-fix.patch"
        saved.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(saved, report.patch)
        payload["patch_file"] = str(saved)
        print(f"gemma-agent: could not apply the fix ({report.apply_error}); patch saved to {saved}", file=sys.stderr)
        code = EXIT_NOT_FIXED
    if report.status == "fixed" and args.patch:
        write_atomically(args.patch, report.patch)
        payload["patch_file"] = str(args.patch)
    if args.json:
        print(json.dumps(payload, indent=2))
    elif report.status == "fixed" and not args.apply and not args.patch:
        sys.stdout.write(report.patch)
    print(f"gemma-agent fix: {report.status}: {report.reason} ({report.steps} steps, "
          f"{report.tokens_in} tokens in / {report.tokens_out} out, {report.seconds:.1f}s)", file=sys.stderr)
    return code

