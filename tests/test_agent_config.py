"""Configuration files, precedence, validation; CLI help and fail-fast behaviour without weights."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import build_parser, main
from agent.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_user_then_repo_then_env_then_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMMA_AGENT_MODEL", raising=False)
    user = write(tmp_path / "home/config.toml", 'model = "/models/user"\n[budgets]\nmax_steps = 7\n'
                                                  '[tests]\ncommand = "pytest -x"\n')
    repo = tmp_path / "repo"
    write(repo / ".gemma-agent.toml", '[budgets]\nmax_steps = 9\n[openai]\nbase_url = "http://127.0.0.1:1/v1"\n'
                                      '[replay]\ntranscript = "t.jsonl"\n')
    config = load_config(repo, user_config=user)
    assert config.model == "/models/user" and config.max_steps == 9 and config.test_command == "pytest -x"
    assert config.base_url == "http://127.0.0.1:1/v1"
    assert config.replay == str((repo / "t.jsonl").resolve())  # relative to the file that names it
    monkeypatch.setenv("GEMMA_AGENT_MODEL", "/models/env")
    assert load_config(repo, user_config=user).model == "/models/env"
    flagged = load_config(repo, {"model": "/models/flag", "max_steps": 3, "backend": None}, user_config=user)
    assert flagged.model == "/models/flag" and flagged.max_steps == 3 and flagged.backend == "mlx"


def test_defaults_without_files(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMMA_AGENT_MODEL", raising=False)
    assert load_config(tmp_path, user_config=tmp_path / "none.toml") == Config()


@pytest.mark.parametrize("text, message", [
    ("backend = 'gpt'\n", "backend must be one of mlx, openai, replay"),
    ("[budgets]\nmax_steps = 'ten'\n", "max_steps must be int"),
    ("[budgets]\nmax_stepz = 1\n", "unknown key [budgets] max_stepz"),
    ("colour = 1\n", "unknown key 'colour'"),
    ("model = \n", "not valid TOML"),
    ("[sandbox]\nenabled = 'no'\n", "sandbox must be bool"),
])
def test_bad_config_is_named_clearly(tmp_path, text, message):
    write(tmp_path / ".gemma-agent.toml", text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(tmp_path, user_config=tmp_path / "none.toml")
    assert ".gemma-agent.toml" in str(info.value)


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_command_explains_every_flag(capsys):
    parser = build_parser()
    commands = dict(_subparsers(parser))
    assert {"repl", "fix", "hook"} <= set(commands)
    nested = [("hook " + name, sub) for name, sub in _subparsers(commands["hook"])]
    assert {name for name, _ in nested} == {"hook install", "hook uninstall", "hook run"}
    for name, sub in [(n, commands[n]) for n in ("repl", "fix", "hook")] + nested:
        assert sub.description, name
        for action in sub._actions:
            if action.option_strings and "-h" not in action.option_strings:
                assert action.help, f"{name} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as exit_info:
            main([*name.split(), "--help"])
        assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_fix_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["fix", "--help"])
    out = capsys.readouterr().out
    assert "0 fixed, 1 not fixed within budget, 2 usage or setup error, 3 the test already passes" in " ".join(out.split())
    for flag in ("--max-steps", "--json", "--apply", "--patch", "--backend", "--record", "--replay"):
        assert flag in out


@pytest.mark.parametrize("argv", [[], ["fix", "tests/test_x.py::test_y"]])
def test_every_mode_fails_fast_without_weights(tmp_path, argv):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "agent.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "gemma-agent convert" in result.stderr and "--backend openai --base-url" in result.stderr
    assert "Traceback" not in result.stderr


def test_thinking_is_off_by_default_and_set_by_config_or_flag(tmp_path, monkeypatch):
    from agent.commands.common import config_from_args

    monkeypatch.delenv("GEMMA_AGENT_MODEL", raising=False)
    user = tmp_path / "none.toml"
    assert load_config(None, user_config=user).thinking is False
    write(tmp_path / "repo/.gemma-agent.toml", "thinking = true\n")
    assert load_config(tmp_path / "repo", user_config=user).thinking is True
    with pytest.raises(ConfigError, match="thinking must be bool"):
        load_config(None, {"thinking": "yes"}, user_config=user)
    args = build_parser().parse_args(["fix", "t::x", "--thinking"])
    monkeypatch.setattr("agent.config.USER_CONFIG", user)
    assert args.thinking is True and config_from_args(args, None).thinking is True


def test_weights_specs_in_config_files(tmp_path):
    (tmp_path / "repo" / "models" / "local").mkdir(parents=True)
    write(tmp_path / "repo/.gemma-agent.toml", 'model = "models/local"\ndrafter = "none"\ndownload = true\n')
    config = load_config(tmp_path / "repo", user_config=tmp_path / "none.toml")
    assert config.model == str((tmp_path / "repo/models/local").resolve())  # a path: relative to the file
    assert config.drafter == "none" and config.download is True
    write(tmp_path / "repo/.gemma-agent.toml", 'model = "mlx-community/gemma-4-12B-it-4bit"\n'
                                               'drafter = "ollama:gemma4:12b"\n')
    config = load_config(tmp_path / "repo", user_config=tmp_path / "none.toml")
    assert config.model == "mlx-community/gemma-4-12B-it-4bit" and config.drafter == "ollama:gemma4:12b"
    assert config.download is False
    with pytest.raises(ConfigError, match="download must be bool"):
        write(tmp_path / "repo/.gemma-agent.toml", 'download = "yes"\n')
        load_config(tmp_path / "repo", user_config=tmp_path / "none.toml")
