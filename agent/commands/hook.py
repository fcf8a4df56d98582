"""`gemma-agent hook install|uninstall|run`: test what is committed or pushed; propose a fix when it breaks."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from agent.backends import BackendUnavailable
from agent.backends.factory import make_backend
from agent.commands.common import UsageError, add_backend_arguments, config_from_args, error, find_repo
from agent.commands.fix import ProgressLog, write_atomically
from agent.fixer import FixSetupError, fix_test, tool_settings
from agent.hook import HOOK_TYPES, MODES, HookError, git_path, install, uninstall

DESCRIPTION = """Install a git hook that runs your tests on what is being committed (pre-commit: the index) or
pushed (pre-push: HEAD) in an isolated worktree. When a test fails it runs `gemma-agent fix` there and saves the
proposed patch under .git/gemma-agent/patches/ (path printed). --mode block stops the commit/push, --mode advise
lets it through. It never modifies your working tree or index. An existing hook is kept and run first;
uninstall restores it. Set GEMMA_AGENT_SKIP=1 to skip the check once. Tests, backend and budgets come from
.gemma-agent.toml."""

# Environment git sets for hooks; the hook's own git commands must run against the workspace, not these.
GIT_HOOK_ENV = ("GIT_INDEX_FILE", "GIT_DIR", "GIT_WORK_TREE", "GIT_PREFIX", "GIT_EDITOR", "GIT_AUTHOR_DATE",
                "GIT_REFLOG_ACTION", "GIT_PUSH_OPTION_COUNT")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("hook", help="install or remove the git hook that tests and proposes fixes",
                                   description=DESCRIPTION)
    actions = parser.add_subparsers(dest="hook_action", metavar="ACTION", required=True)
    inst = actions.add_parser("install", help="install the hook (an existing hook is chained)",
                              description="Install the gemma-agent git hook in the current repository.")
    inst.add_argument("--type", choices=HOOK_TYPES, default="pre-commit", help="which hook (default pre-commit)")
    inst.add_argument("--mode", choices=MODES, default="block",
                      help="block: failing tests stop the commit/push (default); advise: only report and propose")
    inst.add_argument("--repo", type=Path, default=Path.cwd(), help="repository (default: current directory)")
    inst.set_defaults(func=run_install)
    rm = actions.add_parser("uninstall", help="remove the hook and restore the one it chained",
                            description="Remove the gemma-agent git hook; a chained original hook is restored.")
    rm.add_argument("--type", choices=HOOK_TYPES, default="pre-commit", help="which hook (default pre-commit)")
    rm.add_argument("--repo", type=Path, default=Path.cwd(), help="repository (default: current directory)")
    rm.set_defaults(func=run_uninstall)
    body = actions.add_parser("run", help="what the installed hook runs (you rarely call this yourself)",
                              description="Run the configured tests on the staged (pre-commit) or HEAD (pre-push) "
                                          "state in a worktree; on failure propose a fix and save the patch.")
    body.add_argument("--type", choices=HOOK_TYPES, default="pre-commit", help="which state to test")
    body.add_argument("--mode", choices=MODES, default="block", help="exit 1 on failure (block) or 0 (advise)")
    body.add_argument("--repo", type=Path, default=Path.cwd(), help="repository (default: current directory)")
    add_backend_arguments(body)
    body.set_defaults(func=run_hook)


def run_install(args: argparse.Namespace) -> int:
    try:
        path, chained = install(find_repo(args.repo), args.type, args.mode)
    except (UsageError, HookError) as exc:
        return error(str(exc))
    print(f"installed {args.type} hook ({args.mode} mode) at {path}")
    if chained:
        print(f"your existing hook was kept as {chained} and runs first")
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    try:
        path, restored = uninstall(find_repo(args.repo), args.type)
    except (UsageError, HookError) as exc:
        return error(str(exc))
    print(f"removed the gemma-agent {args.type} hook" + (f"; restored your original hook at {path}" if restored else ""))
    return 0


def run_hook(args: argparse.Namespace) -> int:
    if os.environ.get("GEMMA_AGENT_SKIP") == "1":
        return 0
    for name in GIT_HOOK_ENV:
        os.environ.pop(name, None)
    blocked = 1 if args.mode == "block" else 0
    include = "index" if args.type == "pre-commit" else "head"
    try:
        repo = find_repo(args.repo)
        config = config_from_args(args, repo)
        failing = failing_tests(repo, config, include)
    except (UsageError, FixSetupError) as exc:
        return error(f"hook could not run the tests: {exc}", blocked)
    if not failing:
        print("gemma-agent: tests pass", file=sys.stderr)
        return 0
    print(f"gemma-agent: {len(failing)} failing test(s): {', '.join(failing)}", file=sys.stderr)
    try:
        backend = make_backend(config)
        report = fix_test(repo, failing[0], config, backend, listener=ProgressLog(), include=include)
    except (BackendUnavailable, FixSetupError) as exc:
        print(f"gemma-agent: cannot propose a fix: {exc}", file=sys.stderr)
        return _verdict(args, blocked)
    if report.patch:
        patches = git_path(repo, "gemma-agent/patches")
        patches.mkdir(parents=True, exist_ok=True)
        path = patches / f"{args.type}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.patch"
        write_atomically(path, report.patch)
        state = "fixes" if report.status == "fixed" else "is a partial attempt at fixing"
        print(f"gemma-agent: proposed patch ({state} {failing[0]}): {path}\n  apply it with: git apply {path}",
              file=sys.stderr)
    else:
        print(f"gemma-agent: no fix found for {failing[0]} ({report.reason})", file=sys.stderr)
    return _verdict(args, blocked)


def _verdict(args: argparse.Namespace, code: int) -> int:
    action = "commit" if args.type == "pre-commit" else "push"
    if code:
        print(f"gemma-agent: {action} blocked. Skip the check with GEMMA_AGENT_SKIP=1 or --no-verify.", file=sys.stderr)
    return code


def failing_tests(repo: Path, config, include: str) -> list[str]:
    """Run the configured test command on the committed/pushed state; the ids of failing tests."""
    from sandbox import SandboxUnavailable
    from sandbox.workspace import Workspace
    from tools.shell import run_test_suite

    try:
        with Workspace.create(repo, include=include) as workspace:
            report = run_test_suite(tool_settings(config, workspace))
    except SandboxUnavailable as exc:
        raise FixSetupError(f"{exc} (or set [sandbox] enabled = false)") from None
    if report.exit_code != 0 and not report.failures:
        raise FixSetupError(f"the test command failed without naming a failing test:\n{report.output[-2000:]}")
    return sorted({test for test, _ in report.failures})
