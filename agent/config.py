"""Configuration: defaults < ~/.config/gemma-agent/config.toml < REPO/.gemma-agent.toml < GEMMA_AGENT_MODEL < flags."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

USER_CONFIG = Path("~/.config/gemma-agent/config.toml")
REPO_CONFIG = ".gemma-agent.toml"


class ConfigError(Exception):
    """A configuration file or value is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class Config:
    backend: str = "mlx"  # mlx | openai | replay
    model: str | None = None  # mlx: weights (directory, .gguf, ollama:NAME, hub ORG/NAME); None = the default
    drafter: str | None = None  # mlx: MTP drafter, same forms; None = automatic for Gemma 4 12B, "none" = off
    download: bool = False  # mlx: download missing weights without asking (what --yes does)
    kv_bits: int | None = None  # mlx: 8 or 4 quantizes the KV cache pages (None: model dtype)
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8080/v1
    model_name: str = "gemma-4-12b-it"  # openai: the server's model name
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key
    replay: str | None = None  # replay: transcript path
    replay_delay: float = 0.0  # replay: seconds between streamed chunks
    record: str | None = None  # write raw model outputs here
    sandbox: bool = True  # False runs commands without the sandbox (needs approval in the REPL)
    test_command: str = "python -m pytest -q"  # the default runs pytest with the project's Python
    python: str | None = None  # the project's interpreter or environment; None: found (agent.project_python)
    command_timeout: float = 120.0
    max_steps: int = 30
    max_tokens: int | None = None
    max_time: float | None = None
    context_tokens: int = 32768
    max_output_tokens: int = 2048
    approve: str = "ask"  # ask | auto | never
    thinking: bool = False  # Gemma 4 thinking mode (the template's enable_thinking)


# TOML layout: top-level keys plus these tables, each mapping to Config fields.
_TABLES = {
    "openai": {"base_url": "base_url", "model": "model_name", "api_key_env": "api_key_env"},
    "replay": {"transcript": "replay", "delay": "replay_delay"},
    "sandbox": {"enabled": "sandbox", "timeout": "command_timeout"},
    "tests": {"command": "test_command", "python": "python"},
    "budgets": {"max_steps": "max_steps", "max_tokens": "max_tokens", "max_time": "max_time",
                "context_tokens": "context_tokens", "max_output_tokens": "max_output_tokens"},
}
_TOP_LEVEL = {"backend": "backend", "model": "model", "drafter": "drafter", "download": "download",
              "kv_bits": "kv_bits", "approve": "approve", "record": "record", "thinking": "thinking"}
_CHOICES = {"backend": ("mlx", "openai", "replay"), "approve": ("ask", "auto", "never"), "kv_bits": (8, 4)}
_POSITIVE = ("command_timeout", "max_steps", "max_tokens", "max_time", "context_tokens", "max_output_tokens")
_TYPES = {f.name: f.type for f in fields(Config)}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES[name]
    ok = {
        "str": isinstance(value, str), "str | None": isinstance(value, str), "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "int | None": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "float | None": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise ConfigError(f"{source}: {name} must be {kind.replace(' | None', '')}, got {value!r}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"{source}: {name} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
    if name in _POSITIVE and value is not None and value <= 0:
        raise ConfigError(f"{source}: {name} must be greater than 0, got {value!r}")
    if name == "replay_delay" and value < 0:
        raise ConfigError(f"{source}: {name} must not be negative, got {value!r}")
    return float(value) if kind.startswith("float") else value


def parse_toml(text: str, source: str, base_dir: Path) -> dict[str, Any]:
    """Config values from one TOML document; relative paths are taken relative to `base_dir`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in _TABLES:
            for sub, item in value.items():
                if sub not in _TABLES[key]:
                    raise ConfigError(f"{source}: unknown key [{key}] {sub}; known: {', '.join(_TABLES[key])}")
                values[_TABLES[key][sub]] = item
        elif key in _TOP_LEVEL:
            values[_TOP_LEVEL[key]] = value
        else:
            known = ", ".join([*_TOP_LEVEL, *(f"[{t}]" for t in _TABLES)])
            raise ConfigError(f"{source}: unknown key {key!r}; known: {known}")
    for name in ("replay", "record", "python"):
        if isinstance(values.get(name), str):
            path = base_dir / Path(values[name]).expanduser()
            # a venv's bin/python is a symlink that must stay one: resolving it would leave the environment
            values[name] = os.path.normpath(path.absolute()) if name == "python" else str(path.resolve())
    for name in ("model", "drafter"):
        if isinstance(values.get(name), str):
            values[name] = _weights_spec(values[name], base_dir)
    return {name: _coerce(name, value, source) for name, value in values.items()}


def _weights_spec(value: str, base_dir: Path) -> str:
    """A path (relative to the file) stays a path; a hub id, `ollama:NAME` or "none" is kept as written."""
    candidate = base_dir / Path(value).expanduser()
    if value.startswith(("/", "~", ".")) or candidate.exists():
        return str(candidate.resolve())
    return value


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_toml(text, str(path), path.parent)


def load_config(repo: Path | None, overrides: dict[str, Any] | None = None, *, user_config: Path | None = None) -> Config:
    """Merge the config files, the GEMMA_AGENT_MODEL environment variable and flag overrides (None = not given)."""
    values: dict[str, Any] = {}
    values.update(_read((user_config or USER_CONFIG).expanduser()))
    if repo is not None:
        values.update(_read(repo / REPO_CONFIG))
    if os.environ.get("GEMMA_AGENT_MODEL"):
        values["model"] = os.environ["GEMMA_AGENT_MODEL"]
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return replace(Config(), **values)
