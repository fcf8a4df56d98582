"""Real project layouts, real pytest in the real sandbox, replayed native transcripts: the agent runs a project's
tests the way its developer does (its own environment, editable installs resolving to the agent's copy, ignored
build outputs visible), and hooks test what git records."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sandbox
from agent.cli import main
from tests.fixtures.agent.sample_repo import GIT_ENV, git, make_sample_repo

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="needs the bubblewrap sandbox (install.sh installs it)")

ROOT = Path(__file__).resolve().parent.parent
S = '<|"|>'
EDIT = (f"<|tool_call>call:edit_file{{path:{S}src/shapes/area.py{S},old:{S}return side + side{S},"
        f"new:{S}return side * side{S}}}<tool_call|>")
FILES = {
    "pyproject.toml": ('[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
                       '[project]\nname = "shapes"\nversion = "0.1"\n\n'
                       '[tool.setuptools.packages.find]\nwhere = ["src"]\n'),
    "src/shapes/__init__.py": "",
    "src/shapes/area.py": "def square(side):\n    return side + side\n",
    "tests/test_area.py": (
        "import shapes\nfrom shapes.area import square\n\n\n"
        "def test_square():\n    assert square(3) == 9\n\n\n"
        "def test_imported_from_the_repository_path():\n"
        "    assert shapes.__file__.startswith(__file__.rsplit('/tests/', 1)[0] + '/src/')\n"),
    "tests/test_build.py": (
        "from pathlib import Path\n\n\n"
        "def test_generated():  # needs an ignored build output, as toolz's test_has_version needs its egg-info\n"
        "    assert (Path(__file__).parent.parent / 'build' / 'answer.txt').read_text() == '42\\n'\n"),
    ".gitignore": ".venv/\nbuild/\n*.egg-info/\n__pycache__/\n",
}


def _pip_install(python: Path, *args: str) -> None:
    """Install into the environment of `python` with our pip (the project's venv has none: it holds pytest only)."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", *args],
                   check=True, capture_output=True, timeout=600)


def _make_layout(root: Path, venv: Path) -> Path:
    """A src-layout package, committed, with `pip install -e .` into `venv` (the only place pytest is)."""
    repo = root / "shapes"
    for name, text in FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "build").mkdir()
    (repo / "build/answer.txt").write_text("42\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    wheels = [w for w in ("pytest", "iniconfig", "pluggy", "packaging", "pygments", "setuptools")]
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q", *wheels],
                   check=True, capture_output=True, timeout=600)
    _pip_install(venv / "bin/python", "--no-build-isolation", "-e", str(repo))
    return repo


@pytest.fixture(scope="session")
def in_repo_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("in-repo-venv")
    return _make_layout(root, root / "shapes" / ".venv")


@pytest.fixture(scope="session")
def outside_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("outside-venv")
    venv = root / "envs" / "shapes-env"
    return _make_layout(root, venv), venv


def tree_state(repo: Path) -> tuple[bytes, str]:
    """The index bytes and a digest of every file outside .git (the in-repo environment included)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in repo.rglob("*") if ".git" not in p.relative_to(repo).parts):
        digest.update(str(path.relative_to(repo)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return (repo / ".git/index").read_bytes(), digest.hexdigest()


def transcript(tmp_path: Path, *outputs: str) -> str:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return str(path)


def objects_size(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".git/objects").rglob("*") if p.is_file())


def test_in_repo_venv_editable_install_sees_the_agents_edit(in_repo_layout, tmp_path, capsys):
    repo = in_repo_layout
    (repo / "data.bin").write_bytes(os.urandom(3 << 20))  # a large untracked file: never copied into .git
    try:
        before, size = tree_state(repo), objects_size(repo)
        code = main(["fix", "tests/test_area.py::test_square", "--repo", str(repo), "--json",
                     "--replay", transcript(tmp_path, EDIT, "Fixed square.")])
        out = capsys.readouterr()
        assert code == 0, out.err
        report = json.loads(out.out)
        assert report["python"] == str(repo / ".venv/bin/python")
        assert "in-repo .venv" in out.err and out.err.count("tests run with") == 1
        # both tests passed in the agent's copy: the editable install resolved to it, at the repository's path
        assert report["tests_after"]["passed"] == 3 and report["tests_after"]["failed"] == 0
        assert "+    return side * side" in report["patch"].splitlines()
        assert ".venv" not in report["patch"] and "build/" not in report["patch"] and "data.bin" not in report["patch"]
        assert tree_state(repo) == before  # the user's tree, environment and index are byte-identical
        assert objects_size(repo) - size < (1 << 20)
    finally:
        (repo / "data.bin").unlink()


def test_ignored_build_output_is_visible_so_a_passing_test_exits_3(in_repo_layout, capsys):
    code = main(["fix", "tests/test_build.py::test_generated", "--repo", str(in_repo_layout),
                 "--replay", os.devnull])
    assert code == 3, capsys.readouterr().err


def test_sandboxed_commands_cannot_change_the_users_ignored_files(in_repo_layout, tmp_path):
    from agent.config import Config
    from agent.fixer import project_python, tool_settings
    from sandbox.workspace import Workspace
    from tools.shell import run

    with Workspace.create(in_repo_layout) as workspace:
        settings = tool_settings(Config(), workspace, project_python(in_repo_layout, Config()))
        result = run("echo changed > build/answer.txt; cat build/answer.txt; pwd; git log --oneline -1",
                     settings=settings)
    assert str(in_repo_layout) in result  # the command ran at the repository's own path
    assert "initial" in result  # git works there (the worktree's repository is shown read-only)
    assert (in_repo_layout / "build/answer.txt").read_text() == "42\n"
    assert git(in_repo_layout, "worktree", "list").count("\n") == 1


def test_venv_outside_the_repository_found_through_virtual_env(outside_layout, tmp_path, capsys, monkeypatch):
    repo, venv = outside_layout
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    before = tree_state(repo)
    code = main(["fix", "tests/test_area.py::test_square", "--repo", str(repo), "--json",
                 "--replay", transcript(tmp_path, EDIT, "Fixed square.")])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["python"] == str(venv / "bin/python") and "$VIRTUAL_ENV" in out.err
    assert report["tests_after"]["passed"] == 3
    assert tree_state(repo) == before


def _push(repo: Path, *refspecs: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["git", "push", "origin", *refspecs], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=600)


def test_pre_push_tests_each_pushed_ref_not_head(tmp_path, capsys):
    repo = make_sample_repo(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    fix = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
           f"new:{S}return a + b{S}}}<tool_call|>")
    (repo / ".gemma-agent.toml").write_text(
        f'backend = "replay"\n[replay]\ntranscript = "{transcript(tmp_path, fix, "Fixed add.")}"\n')
    git(repo, "add", ".gemma-agent.toml")
    git(repo, "commit", "-qm", "config")  # main: add is still wrong (a - b)
    git(repo, "checkout", "-qb", "good")
    (repo / "calc/ops.py").write_text((repo / "calc/ops.py").read_text().replace("a - b", "a + b"))
    git(repo, "commit", "-qam", "fix add")
    git(repo, "branch", "bad", "main")
    git(repo, "branch", "gone", "good")
    assert _push(repo, "gone").returncode == 0  # before the hook: a remote branch to delete later
    assert main(["hook", "install", "--type", "pre-push", "--repo", str(repo)]) == 0
    capsys.readouterr()
    both = _push(repo, "good", "bad")  # HEAD is good: the bad ref must still be caught
    assert both.returncode != 0
    assert "tests pass on refs/heads/good" in both.stderr
    assert "failing test(s) on refs/heads/bad" in both.stderr and "push blocked" in both.stderr
    git(repo, "checkout", "-q", "bad")  # HEAD is bad: pushing good alone goes through
    good = _push(repo, "good")
    assert good.returncode == 0, good.stderr
    assert "tests pass on refs/heads/good" in good.stderr
    deletion = _push(repo, ":gone")
    assert deletion.returncode == 0, deletion.stderr
    assert git(remote, "branch", "--list", "bad") == ""


def test_passing_commit_costs_one_suite_run_and_a_blocked_one_reuses_it(tmp_path, monkeypatch):
    import tools.shell

    repo = make_sample_repo(tmp_path)
    fix = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
           f"new:{S}return a + b{S}}}<tool_call|>")
    (repo / ".gemma-agent.toml").write_text(
        f'backend = "replay"\n[replay]\ntranscript = "{transcript(tmp_path, fix, "Fixed add.")}"\n')
    runs: list[str | None] = []
    real = tools.shell.run_test_suite

    def counting(settings, selector=None, *, node_id=None):
        runs.append(node_id or selector)
        return real(settings, selector, node_id=node_id)

    monkeypatch.setattr(tools.shell, "run_test_suite", counting)
    git(repo, "add", ".gemma-agent.toml")  # staged: add still fails
    assert main(["hook", "run", "--repo", str(repo)]) == 1
    assert runs[0] is None and runs.count(None) == 2  # the failing run is the fix's "before"; one more after it
    runs.clear()
    (repo / "calc/ops.py").write_text((repo / "calc/ops.py").read_text().replace("a - b", "a + b"))
    git(repo, "add", "calc/ops.py")
    assert main(["hook", "run", "--repo", str(repo)]) == 0
    assert runs == [None]  # a passing commit: one suite run


def test_pre_commit_tests_the_index_git_commit_a_prepares(tmp_path):
    repo = make_sample_repo(tmp_path)
    (repo / ".gemma-agent.toml").write_text('backend = "replay"\n[replay]\ntranscript = "/dev/null"\n')
    git(repo, "add", ".gemma-agent.toml")
    git(repo, "commit", "-qm", "config")
    (repo / "calc/ops.py").write_text((repo / "calc/ops.py").read_text().replace("a - b", "a + b"))
    assert main(["hook", "install", "--repo", str(repo)]) == 0
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT)}
    staged_only = subprocess.run(["git", "commit", "-m", "x", "--allow-empty"], cwd=repo, capture_output=True,
                                 text=True, env=env, timeout=600)
    assert staged_only.returncode != 0  # the index still has the bug; the working-tree fix is not committed
    with_a = subprocess.run(["git", "commit", "-am", "fix add"], cwd=repo, capture_output=True, text=True,
                            env=env, timeout=600)
    assert with_a.returncode == 0, with_a.stderr  # GIT_INDEX_FILE: the index `commit -a` prepared passes
    assert "tests pass on the staged changes" in with_a.stderr
