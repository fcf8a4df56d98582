"""bench/mtp_curve.py: the acceptance oracle is a benchmark double the library cannot see; the bench runs end to
end (tiny widths) and speculative decoding under the oracle stays identical to plain decoding."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("mlx_model", "agent", "tools", "sandbox")


def test_no_library_module_imports_bench_or_names_the_oracle():
    for package in LIBRARY:
        for path in (REPO_ROOT / package).rglob("*.py"):
            source = path.read_text()
            assert "AcceptanceOracle" not in source, path
            for node in ast.walk(ast.parse(source)):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                assert not any(n == "bench" or n.startswith("bench.") for n in names), (path, names)


def test_installed_package_cannot_import_the_oracle():
    """Outside the source tree (as installed), importing every library module loads nothing from bench/, and
    `bench` itself is not importable: the packaging does not ship it."""
    script = (
        "import importlib, pkgutil, sys\n"
        f"for name in {LIBRARY!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "assert not [m for m in sys.modules if m == 'bench' or m.startswith('bench.')]\n"
        "assert not any(hasattr(m, 'AcceptanceOracle') for m in list(sys.modules.values()))\n"
        "try:\n"
        "    import bench.mtp_curve\n"
        "except ImportError:\n"
        "    print('isolated')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "isolated"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert "bench" not in pyproject.split("[tool.setuptools.packages.find]")[1].split("[")[0]


@pytest.fixture(scope="module")
def curve_module():
    sys.path.insert(0, str(REPO_ROOT))
    import bench.mtp_curve as module
    return module


@pytest.fixture(scope="module")
def tiny_pair(curve_module):
    return curve_module.build_pair(layers=2, tiny=True)


@pytest.mark.parametrize("alpha, expected", [(1.0, 1.0), (0.0, 0.0)])
def test_oracle_sets_acceptance_and_output_stays_plain(curve_module, tiny_pair, alpha, expected):
    import mlx_model
    from mlx_model.speculative import SpeculativeStats

    target, drafter = tiny_pair
    cache = mlx_model.make_cache(target, rollback_slack=9)
    curve_module.fill(cache, target, 40, seed=1)
    snapshot = cache.snapshot()
    _, plain = curve_module.decode(target, drafter, cache, snapshot, 7, 20, "plain")
    reference = {41 + i: t for i, t in enumerate(plain)}
    stats = SpeculativeStats()
    oracle = curve_module.AcceptanceOracle(drafter, reference, alpha)
    _, spec = curve_module.decode(target, oracle, cache, snapshot, 7, 20, 3, stats)
    assert spec == plain
    assert stats.drafted > 0 and stats.acceptance_rate == expected


def test_curve_runs_end_to_end_with_tiny_widths():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "mtp_curve.py"), "--tiny", "--layers", "2", "--contexts", "40",
         "--tokens", "10", "--repeats", "1", "--alphas", "0.3", "0.9", "--ks", "1", "3", "--json"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    (curve,) = summary["curves"]
    assert curve["identical_to_plain"] and curve["context"] == 40 and curve["drafter_step_fraction"] > 0
    assert set(curve["alphas"]) == {"0.3", "0.9"}
    for row in curve["alphas"].values():
        assert set(row) == {"1", "3", "adaptive", "plain_tps"}
        assert all(row[k]["speedup"] > 0 for k in ("1", "3", "adaptive"))
    assert curve["alphas"]["0.9"]["3"]["acceptance"] > curve["alphas"]["0.3"]["3"]["acceptance"]
    assert "alpha" in proc.stdout and "adaptive" in proc.stdout
