"""The system prompt: how to work, the project's own instructions (AGENTS.md), and a map of the repository."""
from __future__ import annotations

from pathlib import Path

INSTRUCTION_FILES = ("AGENTS.md", ".gemma-agent.md")
INSTRUCTIONS_LIMIT = 8000  # characters of the project's instruction file kept in the prompt

BASE = """You are gemma-agent, a coding agent working in a git repository on the user's machine.
Use the tools to read, search, edit and test the code; do not guess file contents, read them first.
Make small, focused edits with edit_file (exact old text -> new text). Run the relevant tests after changing code.
Commands run in a sandbox without network access, with the repository as the working directory.
When the task is done, reply with a short summary of what you changed and no tool call."""


def project_instructions(workspace: Path) -> str | None:
    for name in INSTRUCTION_FILES:
        path = workspace / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if len(text) > INSTRUCTIONS_LIMIT:
                text = text[:INSTRUCTIONS_LIMIT] + f"\n[... {name} shortened to {INSTRUCTIONS_LIMIT} characters]"
            return f"Project instructions from {name}:\n{text.strip()}"
    return None


def repository_map(workspace: Path, max_tokens: int = 1024) -> str | None:
    """The repo map from tools.repo_map; None when that tool is not installed or fails on this repository."""
    try:
        from tools.repo_map import repo_map
    except ImportError:
        return None
    try:
        text = repo_map(None, max_tokens, workspace=workspace)
    except Exception:  # a map is a convenience; a repository it cannot parse must not stop the agent
        return None
    return f"Repository map (most relevant definitions):\n{text.strip()}" if text and text.strip() else None


def build_system_prompt(workspace: Path, *, map_tokens: int = 1024) -> str:
    parts = [BASE, project_instructions(workspace), repository_map(workspace, map_tokens)]
    return "\n\n".join(part for part in parts if part)
