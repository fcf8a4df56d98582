"""The project's own Python: the interpreter its developer runs the tests with, found without configuration.

Order: `[tests] python` (or --python), an environment inside the repository (`.venv/`, `venv/`, `env/` holding a
`pyvenv.cfg`), the environment active when gemma-agent starts (`$VIRTUAL_ENV`, then `$CONDA_PREFIX`), else
`python3` on PATH (resolved through shims such as pyenv's to the real interpreter).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

IN_REPO_ENVS = (".venv", "venv", "env")
DEFAULT_TEST_COMMAND = "python -m pytest -q"


class PythonNotFound(Exception):
    """No usable interpreter; the message says what was looked for and how to name one."""


@dataclass(frozen=True)
class ProjectPython:
    """One interpreter and where it was found. `prefix` is its environment (venv/conda) or None."""

    executable: str
    origin: str  # e.g. "in-repo .venv", "$VIRTUAL_ENV", "python3 on PATH", "[tests] python"
    prefix: str | None = None
    conda: bool = False

    def describe(self) -> str:
        return f"{self.executable} ({self.origin})"

    def test_command(self, configured: str) -> str:
        """The default command runs pytest with this interpreter; a configured command is kept as written."""
        if configured == DEFAULT_TEST_COMMAND:
            return f"{shlex.quote(self.executable)} -m pytest -q"
        return configured

    def environment(self, path: str) -> dict[str, str]:
        """Variables an activated environment sets: its bin directory first on PATH, VIRTUAL_ENV/CONDA_PREFIX."""
        if self.prefix is None:
            return {}
        bin_dir = str(Path(self.executable).parent)
        env = {"PATH": os.pathsep.join([bin_dir, *(p for p in path.split(os.pathsep) if p and p != bin_dir)])}
        env["CONDA_PREFIX" if self.conda else "VIRTUAL_ENV"] = self.prefix
        return env

    def directories(self) -> list[str]:
        """Directories the interpreter needs to run: its environment and, for a venv, the base installation."""
        dirs = [self.prefix] if self.prefix else []
        real = os.path.realpath(self.executable)
        dirs.append(str(Path(real).parent.parent))  # <prefix>/bin/python3.X -> <prefix>
        if self.prefix:
            home = _pyvenv_home(Path(self.prefix))
            if home:
                dirs.append(str(Path(os.path.realpath(home)).parent))
        return sorted({d for d in dirs if d and d != "/"})


def _pyvenv_home(prefix: Path) -> str | None:
    """The `home` key of a venv's pyvenv.cfg: the base interpreter's bin directory."""
    try:
        lines = (prefix / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return value.strip()
    return None


def _env_python(prefix: Path) -> Path | None:
    for name in ("bin/python", "bin/python3", "python.exe", "Scripts/python.exe"):
        if (prefix / name).exists():
            return prefix / name
    return None


def _from_prefix(prefix: Path, origin: str, conda: bool = False) -> ProjectPython | None:
    python = _env_python(prefix)
    if python is None:
        return None
    return ProjectPython(str(python), origin, str(prefix), conda)


def _on_path(environ: Mapping[str, str]) -> ProjectPython:
    found = shutil.which("python3", path=environ.get("PATH")) or shutil.which("python", path=environ.get("PATH"))
    if found is None:
        raise PythonNotFound("no python3 on PATH and no environment found (.venv/, venv/, env/, $VIRTUAL_ENV, "
                             "$CONDA_PREFIX); name one with [tests] python = \"PATH\" in .gemma-agent.toml")
    try:  # shims (pyenv, asdf) are scripts that need their own installation: ask for the real interpreter
        done = subprocess.run([found, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                              timeout=30, env=dict(environ))
        real = done.stdout.strip() if done.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        real = ""
    return ProjectPython(real if real and os.path.isabs(real) else found, "python3 on PATH")


def configured_python(value: str, base: Path) -> ProjectPython:
    """`[tests] python`: an interpreter, or an environment directory holding one."""
    path = (base / Path(value).expanduser()).absolute()
    if path.is_dir():
        found = _from_prefix(path, "[tests] python", conda=(path / "conda-meta").is_dir())
        if found is None:
            raise PythonNotFound(f"[tests] python = {value!r}: {path} holds no bin/python")
        return found
    if not os.access(path, os.X_OK) or not path.is_file():
        raise PythonNotFound(f"[tests] python = {value!r}: {path} is not an executable interpreter")
    prefix = path.parent.parent
    if (prefix / "pyvenv.cfg").is_file() or (prefix / "conda-meta").is_dir():
        return ProjectPython(str(path), "[tests] python", str(prefix), (prefix / "conda-meta").is_dir())
    return ProjectPython(str(path), "[tests] python")


def find_python(repo: Path, configured: str | None = None,
                environ: Mapping[str, str] | None = None) -> ProjectPython:
    """The interpreter the project's tests run with (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    if configured:
        return configured_python(configured, repo)
    for name in IN_REPO_ENVS:
        if (repo / name / "pyvenv.cfg").is_file():
            found = _from_prefix(repo / name, f"in-repo {name}")
            if found:
                return found
    for variable, conda in (("VIRTUAL_ENV", False), ("CONDA_PREFIX", True)):
        value = environ.get(variable)
        if value and os.path.isdir(value):
            found = _from_prefix(Path(value), f"${variable}", conda)
            if found:
                return found
    return _on_path(environ)
