"""The set of tools bound to one workspace: declarations for the model and a dispatcher that never raises."""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.base import ToolError, ToolSpec

# Modules whose @tool functions make up the default toolbox, in the order they are declared to the model.
TOOL_MODULES: list[str] = [
    "tools.reading",
    "tools.search",
    "tools.repo_map",
    "tools.editing",
    "tools.shell",
    "tools.git_tools",
]


@dataclass
class ToolSettings:
    """Everything a tool needs besides its model-facing arguments."""

    workspace: Path
    no_sandbox: bool = False
    test_command: str = "python -m pytest -q"
    command_timeout: float = 120.0
    output_limit: int = 20_000
    base_ref: str | None = None  # git_diff/git_status compare against this commit when set (the session's start)
    env: dict[str, str] = field(default_factory=dict)  # for every command: the project's environment (PATH...)
    view: Any = None  # sandbox.View: the workspace at the repository's path with the user's ignored files
    extra: dict[str, Any] = field(default_factory=dict)


def collect_specs(modules: list[str] | None = None) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for name in modules if modules is not None else TOOL_MODULES:
        module = importlib.import_module(name)
        specs.extend(obj.spec for obj in vars(module).values() if callable(obj) and hasattr(obj, "spec"))
    return specs


_JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float), "array": list, "object": dict}


class Toolbox:
    """Tools bound to a workspace. `call` returns text for the model, also when the call is wrong."""

    def __init__(self, settings: ToolSettings, modules: list[str] | None = None):
        self.settings = settings
        self.specs = {spec.name: spec for spec in collect_specs(modules)}

    def declarations(self) -> list[dict[str, Any]]:
        return [spec.declaration() for spec in self.specs.values()]

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        spec = self.specs.get(name)
        if spec is None:
            return f"error: there is no tool named {name!r}; available tools: {', '.join(self.specs)}"
        problem = _check_arguments(spec, arguments)
        if problem:
            return f"error: {problem}. Expected arguments of {name}: {_describe(spec)}"
        kwargs = dict(arguments)
        accepted = inspect.signature(spec.func).parameters
        if "workspace" in accepted:
            kwargs["workspace"] = self.settings.workspace
        if "settings" in accepted:
            kwargs["settings"] = self.settings
        try:
            return spec.func(**kwargs)
        except ToolError as exc:
            return f"error: {exc}"
        except Exception as exc:  # a tool bug must not end the session; the model sees what happened
            return f"error: {name} failed unexpectedly: {type(exc).__name__}: {exc}"


def _check_arguments(spec: ToolSpec, arguments: Any) -> str | None:
    if not isinstance(arguments, dict):
        return "arguments must be an object of named values"
    props = spec.parameters.get("properties", {})
    unknown = [key for key in arguments if key not in props]
    if unknown:
        return f"unknown argument(s) {', '.join(map(repr, unknown))}"
    missing = [key for key in spec.parameters.get("required", []) if key not in arguments]
    if missing:
        return f"missing required argument(s) {', '.join(map(repr, missing))}"
    for key, value in arguments.items():
        expected = props[key].get("type")
        if value is None or expected not in _JSON_TYPES:
            continue
        if isinstance(value, bool) and expected in ("integer", "number"):
            return f"argument {key!r} must be {expected}, got a boolean"
        if not isinstance(value, _JSON_TYPES[expected]):
            return f"argument {key!r} must be {expected}, got {type(value).__name__}"
    return None


def _describe(spec: ToolSpec) -> str:
    required = set(spec.parameters.get("required", []))
    parts = [
        f"{key}: {schema.get('type', 'any')}{'' if key in required else ' (optional)'}"
        for key, schema in spec.parameters.get("properties", {}).items()
    ]
    return "{" + ", ".join(parts) + "}"
