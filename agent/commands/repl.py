"""`gemma-agent` / `gemma-agent repl`: talk to the agent about the repository you are in."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.backends import BackendUnavailable
from agent.backends.factory import make_backend
from agent.commands.common import (UsageError, add_backend_arguments, check_backend_reachable, config_from_args,
                                   error, find_repo)
from agent.fixer import FixSetupError, project_python

DESCRIPTION = """Interactive session in the current repository (also what bare `gemma-agent` starts). The agent
works in an isolated worktree: /diff shows its changes, /undo reverts the last request, /apply copies them into
your working tree. Ctrl-C cancels the current generation or command, Ctrl-D exits; /help lists the commands."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("repl", help="interactive session (the default command)", description=DESCRIPTION)
    add_repl_arguments(parser)
    parser.set_defaults(func=run)


def add_repl_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository (default: current directory)")
    parser.add_argument("--approve", choices=("ask", "auto", "never"),
                        help="actions outside the sandbox policy (commands with --no-sandbox, /apply): "
                             "ask each time (default), allow automatically, or refuse")
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        repo = find_repo(args.repo)
        config = config_from_args(args, repo, approve=args.approve)
        backend = make_backend(config, ask=confirm_download if sys.stdin.isatty() else None)
        check_backend_reachable(config)
        python = project_python(repo, config)
    except (UsageError, BackendUnavailable, FixSetupError) as exc:
        return error(str(exc))
    from sandbox.workspace import Workspace

    from agent.repl import Repl, run_repl

    try:
        workspace = Workspace.create(repo, include="working")
    except Exception as exc:  # sandbox or git trouble: one clear line, not a traceback
        return error(f"cannot create a workspace for {repo}: {exc}")
    with workspace:
        return run_repl(Repl(config, backend, workspace, python=python))


def confirm_download(question: str) -> bool:
    """Ask on the terminal before downloading weights; anything but yes declines."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
