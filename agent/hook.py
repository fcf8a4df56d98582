"""Git hook management: install (chaining any existing hook), uninstall (restoring it), and the hook body."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import agent

MARKER = "# gemma-agent hook"
CHAINED_SUFFIX = ".gemma-agent-chained"
HOOK_TYPES = ("pre-commit", "pre-push")
MODES = ("block", "advise")


class HookError(Exception):
    """Install/uninstall refused; the message says why and what to do."""


def git_path(repo: Path, name: str) -> Path:
    """`git rev-parse --git-path NAME` (honours core.hooksPath and linked worktrees), made absolute."""
    result = subprocess.run(["git", "rev-parse", "--git-path", name], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise HookError(f"{repo} is not a git repository: {result.stderr.strip()}")
    path = Path(result.stdout.strip())
    return path if path.is_absolute() else repo / path


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace").splitlines()[:3]
    except OSError:
        return False


def hook_script(hook_type: str, mode: str) -> str:
    """The shell script git runs: the chained original hook first, then `gemma-agent hook run`."""
    root = Path(agent.__file__).resolve().parent.parent  # where the `agent` package is importable from
    chained = f'"$(dirname "$0")/{hook_type}{CHAINED_SUFFIX}"'
    env = f"PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"
    command = f"{shlex.quote(sys.executable)} -m agent.cli hook run --type {hook_type} --mode {mode}"
    if hook_type == "pre-push":  # the pushed refs arrive on stdin: both the chained hook and ours read them
        body = (f'refs=$(cat)\nif [ -x {chained} ]; then\n  printf "%s\\n" "$refs" | {chained} "$@" || exit $?\n'
                f'fi\nif [ "${{GEMMA_AGENT_SKIP:-}}" = 1 ]; then exit 0; fi\n'
                f'printf "%s\\n" "$refs" | {env} {command}\n')
    else:
        body = (f'if [ -x {chained} ]; then\n  {chained} "$@" || exit $?\nfi\n'
                f'if [ "${{GEMMA_AGENT_SKIP:-}}" = 1 ]; then exit 0; fi\n{env} exec {command} </dev/null\n')
    return f"""#!/bin/sh
{MARKER}
# Installed by `gemma-agent hook install`; remove with `gemma-agent hook uninstall --type {hook_type}`.
# Set GEMMA_AGENT_SKIP=1 to skip the gemma-agent check once.
{body}"""


def install(repo: Path, hook_type: str, mode: str) -> tuple[Path, Path | None]:
    """Install the hook; an existing foreign hook is kept as `<type>.gemma-agent-chained` and run first."""
    hooks = git_path(repo, "hooks")
    hooks.mkdir(parents=True, exist_ok=True)
    path, chained = hooks / hook_type, hooks / f"{hook_type}{CHAINED_SUFFIX}"
    if path.exists() and not is_ours(path):
        if chained.exists():
            raise HookError(f"both {path} and {chained} exist; remove one of them and install again")
        os.replace(path, chained)
    temp = path.with_name(f".{hook_type}.gemma-agent-tmp")
    temp.write_text(hook_script(hook_type, mode), encoding="utf-8")
    temp.chmod(0o755)
    os.replace(temp, path)
    return path, chained if chained.exists() else None


def uninstall(repo: Path, hook_type: str) -> tuple[Path, bool]:
    """Remove our hook and put back the one it chained. Returns (hook path, whether one was restored)."""
    hooks = git_path(repo, "hooks")
    path, chained = hooks / hook_type, hooks / f"{hook_type}{CHAINED_SUFFIX}"
    if not path.exists():
        raise HookError(f"no {hook_type} hook is installed in {hooks}")
    if not is_ours(path):
        raise HookError(f"{path} was not installed by gemma-agent; leaving it alone")
    if chained.exists():
        os.replace(chained, path)
        return path, True
    path.unlink()
    return path, False
