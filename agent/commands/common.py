"""Flags and setup shared by the subcommands: backend choice, budgets, config loading, error reporting."""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from agent.config import Config, ConfigError, load_config

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad flags or setup; reported in one line and exit code 2."""


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model backend (flags override .gemma-agent.toml and ~/.config/gemma-agent)")
    group.add_argument("--backend", choices=("mlx", "openai", "replay"),
                       help="mlx: in-process Gemma 4 (default); openai: an OpenAI-compatible server; "
                            "replay: a recorded transcript")
    group.add_argument("--model", help="mlx: weights: a directory (Hugging Face or MLX layout, LM Studio), a .gguf "
                                       "file, ollama:NAME[:TAG] or a hub repo ORG/NAME[@REVISION] (also "
                                       "GEMMA_AGENT_MODEL; default google/gemma-4-12B-it at 4 bits)")
    group.add_argument("--drafter", metavar="SPEC", help="mlx: MTP drafter for speculative decoding, same forms "
                                                         "(default: the 12B's assistant for a Gemma 4 12B; none = off)")
    group.add_argument("--yes", action="store_true", default=None,
                       help="mlx: download missing weights without asking (also `download = true` in the config)")
    group.add_argument("--kv-bits", type=int, choices=(8, 4), help="mlx: quantize KV cache pages to 8 or 4 bits")
    group.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8080/v1")
    group.add_argument("--model-name", help="openai: model name the server knows (default gemma-4-12b-it)")
    group.add_argument("--api-key-env", help="openai: environment variable holding the API key "
                                             "(default OPENAI_API_KEY; unset means no key)")
    group.add_argument("--replay", "--transcript", dest="replay", metavar="FILE", help="replay raw model outputs from FILE (JSONL); "
                                                        "implies --backend replay")
    group.add_argument("--record", metavar="FILE", help="write every raw model output to FILE (JSONL) for replay")
    group.add_argument("--thinking", action="store_true", default=None,
                       help="Gemma 4 thinking mode: the model reasons before answering (shown dimmed in the REPL, "
                            "never kept in the history); default off")
    limits = parser.add_argument_group("budgets and execution")
    limits.add_argument("--max-steps", type=int, metavar="N", help="most model turns (default 30)")
    limits.add_argument("--max-tokens", type=int, metavar="N", help="most tokens in+out for the session")
    limits.add_argument("--max-time", type=float, metavar="SECONDS", help="wall-time budget")
    limits.add_argument("--context-tokens", type=int, metavar="N", help="context window to stay within (default 32768)")
    limits.add_argument("--test-command", help="how to run the tests (default 'python -m pytest -q')")
    limits.add_argument("--no-sandbox", action="store_true", default=None,
                        help="run commands without the sandbox (outside the sandbox policy)")


def find_repo(start: Path) -> Path:
    """The top of the git work tree containing `start`."""
    if not start.is_dir():
        raise UsageError(f"--repo {start}: no such directory")
    try:
        result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError("git is not installed; gemma-agent works on git repositories") from None
    if result.returncode != 0:
        raise UsageError(f"{start} is not inside a git repository (run `git init` first)")
    return Path(result.stdout.strip())


def config_from_args(args: argparse.Namespace, repo: Path | None, **extra: Any) -> Config:
    overrides = {
        "backend": "replay" if getattr(args, "replay", None) and not args.backend else args.backend,
        "model": args.model, "drafter": args.drafter, "download": args.yes, "kv_bits": args.kv_bits,
        "base_url": args.base_url, "model_name": args.model_name,
        "api_key_env": args.api_key_env, "replay": args.replay, "record": args.record,
        "max_steps": args.max_steps, "max_tokens": args.max_tokens, "max_time": args.max_time,
        "context_tokens": args.context_tokens, "test_command": args.test_command,
        "sandbox": False if args.no_sandbox else None, "thinking": args.thinking, **extra,
    }
    for name in ("max_steps", "max_tokens", "context_tokens"):
        if overrides[name] is not None and overrides[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    try:
        config = load_config(repo, overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if config.record:
        record = Path(config.record).expanduser()
        if not record.parent.is_dir():
            raise UsageError(f"--record {config.record}: directory {record.parent} does not exist")
        if config.replay and record.resolve() == Path(config.replay).expanduser().resolve():
            raise UsageError(f"--record {config.record} is the transcript being replayed; record to another file")
    return config


def check_backend_reachable(config: Config, timeout: float = 5.0) -> None:
    """UsageError when the openai backend's server cannot be connected to (before any test runs)."""
    if config.backend != "openai" or not config.base_url:
        return
    parsed = urlparse(config.base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--base-url {config.base_url!r} is not an http(s) URL, e.g. http://127.0.0.1:8080/v1")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the model server at {config.base_url} ({exc.strerror or exc}); start it "
                         "or fix --base-url") from None


def error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"gemma-agent: error: {message}", file=sys.stderr)
    return code


def describe_arguments(arguments: dict, limit: int = 40, show: Callable[[str], str] = repr) -> str:
    """Arguments in one line; for an edit, `old` and `new` are shown from a little before where they first
    differ, so they can be told apart even when they share a long beginning."""
    shown = {key: str(value) for key, value in arguments.items()}
    old, new = arguments.get("old"), arguments.get("new")
    edited = isinstance(old, str) and isinstance(new, str)
    if edited:
        start = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        start = max(0, start - 10)
        for key in ("old", "new"):
            text = shown[key]
            more = "..." if len(text) > start + limit else ""
            shown[key] = ("..." if start else "") + text[start:start + limit] + more
    return ", ".join(f"{key}={show(text if edited and key in ('old', 'new') else text[:limit])}"
                     for key, text in shown.items())
