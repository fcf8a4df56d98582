"""Real coding agents, headless, against `gemma-agent serve --backend replay`: each writes a file through its
own tool, as the scripted model output asks. The clients are installed outside the repository (see the README's
"Use it from your editor/agent"): npm packages under $GEMMA_AGENT_CLIENTS (default /tmp/clients) and aider in
its own venv there; a test skips, naming what to install, when its client is missing. Every client runs with
HOME in a temporary directory, a local base URL and telemetry off."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve_util import running_server, write_transcript

S = '<|"|>'
CLIENTS = Path(os.environ.get("GEMMA_AGENT_CLIENTS", "/tmp/clients"))
CONTENT = "hello from gemma"
DONE = "Done: wrote hello.txt."


def client(name: str, install: str) -> str:
    for candidate in (CLIENTS / "node_modules/.bin" / name, CLIENTS / "aider-venv/bin" / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: {install}")
    return found


def call(name: str, **arguments: str) -> str:
    body = ",".join(f"{k}:{S}{v}{S}" for k, v in sorted(arguments.items()))
    return f"Writing the file.<|tool_call>call:{name}{{{body}}}<tool_call|>"


@pytest.fixture
def work(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    return tmp_path


def run_client(argv: list[str], work: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=work / "project", capture_output=True, text=True, timeout=240,
                            stdin=subprocess.DEVNULL,
                            env={"PATH": os.environ["PATH"], "HOME": str(work / "home"), "TERM": "dumb", **env})
    assert (work / "project/hello.txt").is_file(), f"{argv[0]} wrote nothing:\n{result.stdout}\n{result.stderr}"
    assert (work / "project/hello.txt").read_text().strip() == CONTENT
    return result


def serve(work: Path, outputs: list[str]):
    return running_server("--replay", write_transcript(work / "transcript.jsonl", outputs))


def test_claude_code_writes_through_messages_api(work):
    claude = client("claude", "npm install --prefix /tmp/clients @anthropic-ai/claude-code")
    target = work / "project/hello.txt"
    with serve(work, [call("Write", file_path=str(target), content=CONTENT), DONE]) as base:
        result = run_client([claude, "-p", "write hello.txt", "--model", "replay", "--allowedTools", "Write"], work, {
            "ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "unused", "ANTHROPIC_MODEL": "replay",
            "ANTHROPIC_SMALL_FAST_MODEL": "replay", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1"})
    assert DONE in result.stdout


def test_codex_exec_writes_through_responses_api(work):
    codex = client("codex", "npm install --prefix /tmp/clients @openai/codex")
    home = work / "home/.codex"
    home.mkdir()
    with serve(work, [call("exec_command", cmd=f"printf '{CONTENT}' > hello.txt"), DONE]) as base:
        (home / "config.toml").write_text(
            'model = "replay"\nmodel_provider = "gemma"\n\n[model_providers.gemma]\nname = "gemma-agent serve"\n'
            f'base_url = "{base}/v1"\nwire_api = "responses"\n\n[analytics]\nenabled = false\n')
        # Codex's own sandbox helper (codex-linux-sandbox) is missing from the npm build here: run in the temp dir
        result = run_client([codex, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                             "write hello.txt"], work, {"CODEX_HOME": str(home)})
    assert DONE in result.stdout


def test_opencode_run_writes_through_chat_completions(work):
    opencode = client("opencode", "npm install --prefix /tmp/clients opencode-ai")
    target = work / "project/hello.txt"
    with serve(work, [call("write", filePath=str(target), content=CONTENT), DONE]) as base:
        (work / "project/opencode.json").write_text(json.dumps({
            "$schema": "https://opencode.ai/config.json",
            "provider": {"gemma": {"npm": "@ai-sdk/openai-compatible", "name": "gemma-agent serve",
                                   "options": {"baseURL": f"{base}/v1", "apiKey": "unused"},
                                   "models": {"replay": {"name": "replay", "tool_call": True}}}},
            "model": "gemma/replay", "small_model": "gemma/replay", "share": "disabled", "autoupdate": False}))
        result = run_client([opencode, "run", "--title", "hello", "--auto", "write hello.txt"], work, {
            "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1"})
    assert DONE in result.stdout


def test_continue_cli_writes_through_chat_completions(work):
    cn = client("cn", "npm install --prefix /tmp/clients @continuedev/cli")
    with serve(work, [call("Write", filepath="hello.txt", content=CONTENT), DONE]) as base:
        config = work / "continue.yaml"
        config.write_text("name: gemma-agent\nversion: 1.0.0\nschema: v1\nmodels:\n  - name: replay\n"
                          f"    provider: openai\n    model: replay\n    apiBase: {base}/v1\n    apiKey: unused\n"
                          "    roles: [chat, edit, apply]\n")
        result = run_client([cn, "-p", "write hello.txt", "--config", str(config), "--allow", "Write"], work, {
            "CONTINUE_TELEMETRY_ENABLED": "0"})
    assert DONE in result.stdout


def test_aider_writes_through_chat_completions(work):
    aider = client("aider", "python -m venv /tmp/clients/aider-venv && "
                            "/tmp/clients/aider-venv/bin/pip install aider-chat==0.86.2")
    (work / "project/hello.txt").write_text("")
    with serve(work, [f"hello.txt\n```\n{CONTENT}\n```\n"]) as base:
        run_client([aider, "--model", "openai/replay", "--openai-api-base", f"{base}/v1", "--openai-api-key",
                    "unused", "--message", "write hello.txt", "--yes-always", "--no-git", "--edit-format", "whole",
                    "--no-analytics", "--no-check-update", "--no-show-model-warnings", "--no-pretty",
                    "--no-show-release-notes", "hello.txt"], work, {"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
