"""The project's Python, found the way its developer runs the tests: in-repo env, active env, PATH."""
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.project_python import DEFAULT_TEST_COMMAND, PythonNotFound, find_python


def fake_env(prefix: Path) -> Path:
    (prefix / "bin").mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text(f"home = {Path(sys.base_prefix) / 'bin'}\n")
    (prefix / "bin/python").symlink_to(sys.executable)
    return prefix


def test_order_in_repo_then_virtual_env_then_conda_then_path(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    active, conda = fake_env(tmp_path / "active"), fake_env(tmp_path / "conda")
    environ = {"VIRTUAL_ENV": str(active), "CONDA_PREFIX": str(conda), "PATH": str(Path(sys.executable).parent)}
    assert find_python(repo, environ=environ).origin == "$VIRTUAL_ENV"
    del environ["VIRTUAL_ENV"]
    found = find_python(repo, environ=environ)
    assert found.origin == "$CONDA_PREFIX" and found.environment("/bin")["CONDA_PREFIX"] == str(conda)
    fake_env(repo / "venv")
    found = find_python(repo, environ=environ)
    assert found.executable == str(repo / "venv/bin/python") and found.origin == "in-repo venv"
    fake_env(repo / ".venv")
    assert find_python(repo, environ=environ).origin == "in-repo .venv"
    assert find_python(tmp_path, environ={"PATH": str(Path(sys.executable).parent)}).origin == "python3 on PATH"
    with pytest.raises(PythonNotFound, match=r"\[tests\] python"):
        find_python(tmp_path, environ={"PATH": str(tmp_path / "nothing")})


def test_environment_is_activated_and_the_default_command_uses_the_interpreter(tmp_path):
    found = find_python(tmp_path, environ={"VIRTUAL_ENV": str(fake_env(tmp_path / "e")), "PATH": "/usr/bin"})
    env = found.environment("/usr/bin:/bin")
    assert env["PATH"] == f"{tmp_path / 'e/bin'}:/usr/bin:/bin" and env["VIRTUAL_ENV"] == str(tmp_path / "e")
    assert found.test_command(DEFAULT_TEST_COMMAND) == f"{tmp_path / 'e/bin/python'} -m pytest -q"
    assert found.test_command("tox -e py") == "tox -e py"
    assert str(tmp_path / "e") in found.directories() and str(Path(sys.base_prefix).resolve()) in found.directories()


def test_tests_python_in_the_config_file_wins(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    fake_env(repo / ".venv")
    other = fake_env(tmp_path / "other")
    (repo / ".gemma-agent.toml").write_text('[tests]\npython = "../other/bin/python"\n')
    config = load_config(repo, user_config=tmp_path / "none.toml")
    found = find_python(repo, config.python)
    assert found.executable == str(other / "bin/python") and found.origin == "[tests] python"
    (repo / ".gemma-agent.toml").write_text('[tests]\npython = "missing/python"\n')
    with pytest.raises(PythonNotFound, match="not an executable"):
        find_python(repo, load_config(repo, user_config=tmp_path / "none.toml").python)
    (repo / ".gemma-agent.toml").write_text('[budgets]\nmax_output_tokens = 0\n')
    with pytest.raises(ConfigError, match="greater than 0"):
        load_config(repo, user_config=tmp_path / "none.toml")
