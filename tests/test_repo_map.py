"""The repo map on real multi-file projects: tags, ranking, focus, token budget, disk cache."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tools.base import ToolError
from tools.ranking import pagerank
from tools.repo_map import build_repo_map, estimate_tokens, repo_map
from tools.tag_cache import TagCache, cache_dir_for
from tools.tags import extract_tags

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_AGENT_CACHE_DIR", str(tmp_path / "cache"))


def make_project(root: Path) -> Path:
    files = {
        "shop/engine.py": """
            class Engine:
                def run(self, order):
                    return order
            """,
        "shop/util.py": """
            def format_price(cents):
                return f"{cents / 100:.2f}"
            """,
        "shop/orders.py": """
            from shop.engine import Engine

            def place(order):
                return Engine().run(order)
            """,
        "shop/api.py": """
            from shop.engine import Engine

            class Handler:
                def post(self, body):
                    return Engine().run(body)
            """,
        "shop/cli.py": """
            from shop.engine import Engine
            from shop.util import format_price

            def main():
                print(format_price(Engine().run(100)))
            """,
        "shop/lonely.py": """
            def unused_thing():
                return 0
            """,
        "build/generated.py": """
            class Engine:
                pass
            """,
        ".gitignore": "build/\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def file_order(text: str) -> list[str]:
    return [line[:-1] for line in text.splitlines() if line.endswith(".py:")]


def test_most_referenced_definition_ranks_first(tmp_path):
    out = repo_map(workspace=make_project(tmp_path))
    assert file_order(out)[0] == "shop/engine.py"
    assert "1: class Engine:" in out and "2:     def run(self, order):" in out
    assert "build/generated.py" not in out  # ignored by .gitignore


def test_focus_on_a_file_or_symbol_pulls_its_neighbours_up(tmp_path):
    root = make_project(tmp_path)
    assert file_order(repo_map(workspace=root))[0] != "shop/lonely.py"
    assert file_order(repo_map(focus="shop/lonely.py", workspace=root))[0] == "shop/lonely.py"
    by_file = repo_map(focus="./shop/cli.py", workspace=root)
    order = file_order(by_file)
    assert order[0] == "shop/cli.py" and set(order[1:3]) == {"shop/util.py", "shop/engine.py"}  # what it uses
    by_symbol = repo_map(focus=["format_price"], max_tokens=64, workspace=root)
    assert file_order(by_symbol)[0] == "shop/util.py"
    noted = repo_map(focus="no_such_thing, shop/util.py", workspace=root)
    assert "focus matched no file or symbol: no_such_thing" in noted
    assert "ranked toward shop/util.py" in noted


def test_output_stays_within_the_budget(tmp_path):
    root = make_project(tmp_path)
    sizes = []
    for budget in (64, 80, 120, 1024):
        out = repo_map(max_tokens=budget, workspace=root)
        assert estimate_tokens(out) <= budget
        sizes.append(out.count("\n"))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    counted = build_repo_map(root, [], 30, count_tokens=lambda text: len(text.split()))
    assert len(counted.split()) <= 30
    assert "too small" in build_repo_map(root, [], 10)
    with pytest.raises(ToolError, match="max_tokens"):
        repo_map(max_tokens=5, workspace=root)
    with pytest.raises(ToolError, match="focus"):
        repo_map(focus=3, workspace=root)


def test_map_of_this_repository_links_editing_to_matching():
    out = repo_map(focus="tools/editing.py", max_tokens=1024, workspace=REPO_ROOT)
    assert "tools/matching.py" in file_order(out)
    assert "def exact_spans(" in out and "def tolerant_spans(" in out


def test_cache_reparses_only_changed_files(tmp_path):
    root = make_project(tmp_path / "p")
    cache_dir = tmp_path / "c"
    files = ["shop/engine.py", "shop/util.py", "shop/cli.py"]
    first = TagCache(root, cache_dir)
    for rel in files:
        first.tags_for(rel, "python")
    first.save()
    assert first.parsed == 3
    again = TagCache(root, cache_dir)
    tags = again.tags_for("shop/util.py", "python")
    assert again.parsed == 0 and [d.name for d in tags.definitions] == ["format_price"]
    (root / "shop/util.py").write_text("def format_price(cents):\n    pass\n\ndef parse_price(text):\n    pass\n")
    changed = again.tags_for("shop/util.py", "python")
    assert again.parsed == 1 and [d.name for d in changed.definitions] == ["format_price", "parse_price"]


def test_map_sees_edits_and_cache_lives_in_git_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMMA_AGENT_CACHE_DIR")
    root = make_project(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert cache_dir_for(root) == root / ".git" / "gemma-agent"
    assert "parse_price" not in repo_map(workspace=root)
    (root / "shop/util.py").write_text("def parse_price(text):\n    return text\n")
    assert "1: def parse_price(text):" in repo_map(workspace=root)
    assert (root / ".git" / "gemma-agent" / "repo-map-tags.json").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert "gemma-agent" not in status


def test_damaged_cache_is_ignored(tmp_path):
    root = make_project(tmp_path / "p")
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    (cache_dir / "repo-map-tags.json").write_text("{not json")
    cache = TagCache(root, cache_dir)
    assert cache.tags_for("shop/util.py", "python").definitions[0].name == "format_price"
    cache.save()
    assert TagCache(root, cache_dir).entries


SAMPLES = {
    "javascript": ("function add(a, b) { return a + b }\nclass Box { open() { add(1, 2) } }\n", {"add", "Box", "open"}),
    "typescript": ("interface Shape { area(): number }\nfunction make(): Shape { return null! }\n", {"Shape", "make"}),
    "tsx": ("function App() { return <div/> }\n", {"App"}),
    "go": ("package m\ntype Point struct{}\nfunc (p Point) Norm() int { return 0 }\nfunc Sum() {}\n",
           {"Point", "Norm", "Sum"}),
    "rust": ("struct Cat;\ntrait Speak { fn speak(&self); }\nfn main() { println!(\"hi\"); }\n",
             {"Cat", "Speak", "main"}),
    "java": ("class Dog { void bark() { noise(); } }\ninterface Pet {}\n", {"Dog", "bark", "Pet"}),
    "c": ("struct node { int v; };\nint count(struct node *n) { return helper(n); }\n", {"node", "count"}),
    "cpp": ("class Widget { public: void draw(); };\nvoid Widget::draw() { paint(); }\n", {"Widget", "draw"}),
    "ruby": ("module Zoo\n  class Lion\n    def roar\n      growl()\n    end\n  end\nend\n", {"Zoo", "Lion", "roar"}),
    "python": ("class Base: pass\nclass Child(Base):\n    def m(self, x: Base) -> None:\n        helper()\n",
               {"Base", "Child", "m"}),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_every_language_yields_definitions(language):
    source, expected = SAMPLES[language]
    tags = extract_tags(source.encode(), language)
    assert expected <= {d.name for d in tags.definitions}


def test_references_from_our_extra_queries():
    python = extract_tags(SAMPLES["python"][0].encode(), "python")
    assert python.references.get("Base") == 2 and python.references.get("helper") == 1
    c = extract_tags(SAMPLES["c"][0].encode(), "c")
    assert c.references.get("helper") == 1


def test_parsing_needs_no_network():
    """Every grammar loads and parses in a process with no network: a fresh network namespace when the
    machine allows one, and in any case with sockets disabled inside the interpreter."""
    script = textwrap.dedent("""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from tools.tags import extract_tags
        import json, sys
        samples = json.loads(sys.stdin.read())
        for language, source in samples.items():
            assert extract_tags(source.encode(), language).definitions, language
        print("parsed", len(samples))
    """)
    command = [sys.executable, "-c", script]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        command = [unshare, "-n"] + command
    payload = __import__("json").dumps({lang: src for lang, (src, _) in SAMPLES.items()})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, input=payload, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"parsed {len(SAMPLES)}"


def test_pagerank_matches_the_linear_solution():
    edges = [(0, 1, 1.0), (0, 2, 3.0), (1, 2, 1.0), (2, 0, 2.0), (3, 2, 1.0)]  # node 4 has no out-edges
    jump = np.array([0.5, 0.0, 0.0, 0.0, 0.5])
    source, target, weight = (np.array(column) for column in zip(*edges))
    rank = pagerank(5, source, target, weight, jump, damping=0.85)
    transition = np.zeros((5, 5))
    for source, target, weight in edges:
        transition[target, source] += weight
    out = transition.sum(axis=0)
    for column in range(5):  # a node without out-edges jumps like the teleport
        transition[:, column] = transition[:, column] / out[column] if out[column] else jump
    expected = np.linalg.solve(np.eye(5) - 0.85 * transition, 0.15 * jump)
    assert rank.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(rank, expected, atol=1e-9)
    with pytest.raises(ValueError):
        pagerank(2, [], [], [], np.array([0.0, 0.0]))


def test_a_grammar_that_fails_to_load_leaves_only_its_files_out(tmp_path, monkeypatch):
    import tools.tags

    root = make_project(tmp_path / "p")
    (root / "web.js").write_text("function render() { return 1 }\n")
    real = tools.tags._parser_and_query

    def no_javascript(language):
        if language == "javascript":
            raise ImportError("No module named 'tree_sitter_javascript'")
        return real(language)

    monkeypatch.setattr(tools.tags, "_parser_and_query", no_javascript)
    out = repo_map(workspace=root)
    assert "class Engine:" in out and "render" not in out
    assert "javascript files left out, its grammar failed to load (ImportError" in out
