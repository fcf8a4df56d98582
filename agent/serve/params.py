"""Validation and conversion shared by the API modules: sampling parameters, stop sequences, tools."""
from __future__ import annotations

import json
from typing import Any

from agent.serve import fmt
from agent.serve.errors import ApiError, require


def number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high,
            f"{name} must be a number from {low:g} to {high:g}; got {value!r}", name)
    return float(value)


def integer(body: dict, name: str, default: int | None, low: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
            f"{name} must be an integer of at least {low}; got {value!r}", name)
    return value


def stop_list(value: Any, name: str, limit: int = 16) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    require(isinstance(value, list) and len(value) <= limit and all(isinstance(s, str) and s for s in value),
            f"{name} must be a non-empty string or a list of at most {limit} non-empty strings", name)
    return value


def tool_list(tools: Any, convert) -> list[dict[str, Any]]:
    """Declarations for a request's `tools` list; `convert(tool, param)` gives one declaration or None to
    skip a tool the model cannot use (hosted tools such as web search)."""
    if tools is None:
        return []
    require(isinstance(tools, list), "tools must be a list", "tools")
    declarations = []
    for i, tool in enumerate(tools):
        require(isinstance(tool, dict), "each tool must be an object", f"tools[{i}]")
        declaration = convert(tool, f"tools[{i}]")
        if declaration is not None:
            declarations.append(declaration)
    return declarations


def tool_declaration(name: Any, description: Any, parameters: Any, param: str) -> dict[str, Any]:
    """A tool as the renderer takes it: {"name", "description", "parameters"}."""
    require(isinstance(name, str) and bool(name), "every tool needs a name", param)
    require(parameters is None or isinstance(parameters, dict), f"tool {name}: parameters must be a JSON schema "
            "object", param)
    declaration = {"name": name, "description": description if isinstance(description, str) else ""}
    if parameters:
        declaration["parameters"] = parameters
    return declaration


def json_arguments(text: Any, param: str) -> dict[str, Any]:
    """Tool-call arguments sent as a JSON string (OpenAI) back to an object."""
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text or "{}")
    except (TypeError, json.JSONDecodeError):
        raise ApiError(400, f"tool call arguments are not valid JSON: {str(text)[:80]!r}", param=param) from None
    require(isinstance(value, dict), "tool call arguments must be a JSON object", param)
    return value


def check_model(engine_model: str, requested: Any) -> None:
    require(isinstance(requested, str) and bool(requested), "model is required", "model")
    if requested != engine_model:
        raise ApiError(404, f"model {requested!r} does not exist; this server serves {engine_model!r}",
                       param="model", code="model_not_found")


def resolve_tool_choice(kind: Any, name: Any, names: set[str], param: str = "tool_choice") -> tuple[str, bool]:
    """(forced output prefix, whether tools are offered) for a tool choice normalized by the API module to
    kind auto | none | required | function (with `name`). Required / named calls are enforced by starting the
    model's output with the call marker (and the name)."""
    if kind in (None, "auto"):
        return "", True
    if kind == "none":
        return "", False
    require(bool(names), f"{param} asks for a tool call but no tools were given", param)
    if kind == "required":
        return fmt.forced_call_prefix(None), True
    require(kind == "function", f"unsupported {param}: {kind!r}", param)
    require(isinstance(name, str) and name in names, f"{param} names a tool that was not given: {name!r}", param)
    return fmt.forced_call_prefix(name), True
