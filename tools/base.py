"""What every tool shares: the declaration decorator, the error type, and workspace path checks."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class ToolError(Exception):
    """A failure the model can act on; its message is returned to the model as the tool result."""


@dataclass(frozen=True)
class ToolSpec:
    """The declaration handed to the model: a name, what the tool does, and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., str] = field(compare=False, repr=False)

    def declaration(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def tool(description: str, properties: dict[str, dict[str, Any]], required: tuple[str, ...] = ()):
    """Mark a function as a tool. `properties` is the JSON schema of its model-facing parameters."""

    def mark(func: Callable[..., str]) -> Callable[..., str]:
        schema = {"type": "object", "properties": properties, "required": list(required)}
        func.spec = ToolSpec(func.__name__, description, schema, func)  # type: ignore[attr-defined]
        return func

    return mark


def resolve_path(workspace: str | os.PathLike[str], path: str, *, must_exist: bool = False) -> Path:
    """Resolve `path` (relative to the workspace, or absolute inside it) and refuse anything that leaves it.

    Symlinks are followed before the check, so a link inside the workspace that points outside is refused.
    """
    root = Path(workspace).resolve()
    if not isinstance(path, str) or not path.strip():
        raise ToolError("path must be a non-empty string relative to the workspace root")
    candidate = Path(path)
    full = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if full != root and root not in full.parents:
        raise ToolError(f"{path!r} is outside the workspace; use a path relative to the repository root")
    if must_exist and not full.exists():
        raise ToolError(f"{path!r} does not exist (use list_files to see what is there)")
    return full
