"""`gemma-agent hook install|uninstall|run`: test what is committed or pushed; propose a fix when it breaks."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from agent.backends import BackendUnavailable
from agent.backends.factory import make_backend
from agent.commands.common import UsageError, add_backend_arguments, config_from_args, error, find_repo
from agent.commands.fix import ProgressLog, write_atomically
from agent.fixer import (FixSetupError, check_started, fix_in_workspace, last_line, project_python, require_sandbox,
                          tool_settings)
from agent.hook import HOOK_TYPES, MODES, HookError, git_path, install, uninstall

DESCRIPTION = """Install a git hook that runs your tests on what git is about to record, in an isolated worktree:
pre-commit tests the staged state (with `git commit -a`, the index git prepares), pre-push each pushed commit
(deleted refs pass). When a test fails it runs `gemma-agent fix` there and saves the
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
                              description="Run the configured tests on the staged state (pre-commit) or on each "
                                          "pushed commit read from stdin (pre-push) in a worktree; on failure "
                                          "propose a fix and save the patch.")
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
    index_file = os.environ.get("GIT_INDEX_FILE") if args.type == "pre-commit" else None
    index_file = os.path.abspath(index_file) if index_file else None  # git runs hooks at the worktree's top
    for name in GIT_HOOK_ENV:
        os.environ.pop(name, None)
    blocked = 1 if args.mode == "block" else 0
    setup_code = 2 if blocked else 0
    try:
        repo = find_repo(args.repo)
        config = config_from_args(args, repo)
        if args.type == "pre-commit" and not has_commits(repo):
            print("gemma-agent: no commits yet; the first commit is not tested", file=sys.stderr)
            return 0
        require_sandbox(config, "[sandbox] enabled = false in .gemma-agent.toml")
        python = project_python(repo, config)
        states = pushed_commits(sys.stdin) if args.type == "pre-push" else [("HEAD", "the staged changes")]
    except (UsageError, FixSetupError) as exc:
        return error(f"hook could not run the tests: {exc}", setup_code)
    if not states:
        return 0
    print(f"gemma-agent: tests run with {python.describe()}", file=sys.stderr)
    include = "index" if args.type == "pre-commit" else "head"
    code = 0
    for revision, label in states:
        try:
            failed = check_state(args, repo, config, python, include, index_file, revision, label)
        except (FixSetupError, RuntimeError, OSError) as exc:
            return error(f"hook could not run the tests on {label}: {exc}", setup_code)
        code = code or (blocked if failed else 0)
    return _verdict(args, code)


def has_commits(repo: Path) -> bool:
    done = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo, capture_output=True)
    return done.returncode == 0


def pushed_commits(stream: TextIO) -> list[tuple[str, str]]:
    """(commit, label) for each ref pre-push is given on stdin, once per commit; deletions are skipped
    (githooks(5): `<local ref> SP <local object name> SP <remote ref> SP <remote object name> LF`)."""
    commits: dict[str, list[str]] = {}
    for line in ("" if stream is None or stream.isatty() else stream.read()).splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        local_ref, local_sha, remote_ref, _ = parts
        if set(local_sha) == {"0"}:  # a deletion pushes no commit
            continue
        commits.setdefault(local_sha, []).append(f"{local_ref} -> {remote_ref}")
    return [(sha, f"{', '.join(refs)} ({sha[:12]})") for sha, refs in commits.items()]


def check_state(args: argparse.Namespace, repo: Path, config, python, include: str, index_file: str | None,
                revision: str, label: str) -> bool:
    """Run the suite once on one state in a worktree; when it fails, the agent starts from that run (no
    second suite run) and the proposed patch is saved. True when a test fails."""
    from sandbox.workspace import Workspace
    from tools.shell import run_test_suite

    with Workspace.create(repo, include=include, index_file=index_file, revision=revision) as workspace:
        settings = tool_settings(config, workspace, python)
        report = run_test_suite(settings)
        check_started(report, settings.test_command)
        failing = sorted({test for test, _ in report.failures})
        if report.exit_code == 5 and not failing:  # pytest: no tests collected
            print(f"gemma-agent: no tests in {label}", file=sys.stderr)
            return False
        if report.exit_code != 0 and not failing:
            raise FixSetupError(f"the test command failed (exit {report.exit_code}) without naming a failing "
                                f"test: {last_line(report.output)}")
        if not failing:
            print(f"gemma-agent: tests pass on {label}", file=sys.stderr)
            return False
        print(f"gemma-agent: {len(failing)} failing test(s) on {label}: {', '.join(failing)}", file=sys.stderr)
        try:
            backend = make_backend(config)
            fix = fix_in_workspace(workspace, failing[0], config, backend, python, listener=ProgressLog(),
                                   before=report)
        except (BackendUnavailable, FixSetupError) as exc:
            print(f"gemma-agent: cannot propose a fix: {exc}", file=sys.stderr)
            return True
    if fix.patch:
        patches = git_path(repo, "gemma-agent/patches")
        patches.mkdir(parents=True, exist_ok=True)
        commit = f"-{revision[:12]}" if args.type == "pre-push" else ""
        path = patches / f"{args.type}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{commit}.patch"
        write_atomically(path, fix.patch)
        state = "fixes" if fix.status == "fixed" else "is a partial attempt at fixing"
        print(f"gemma-agent: proposed patch ({state} {failing[0]}): {path}\n  apply it with: git apply {path}",
              file=sys.stderr)
    else:
        print(f"gemma-agent: no fix found for {failing[0]} ({fix.reason})", file=sys.stderr)
    return True


def _verdict(args: argparse.Namespace, code: int) -> int:
    action = "commit" if args.type == "pre-commit" else "push"
    if code:
        print(f"gemma-agent: {action} blocked. Skip the check with GEMMA_AGENT_SKIP=1 or --no-verify.", file=sys.stderr)
    return code
