"""Repo-map benchmark: our repo_map vs aider's RepoMap on the Python standard library, cold and warm.

Both build a 1024-token map of the same files in the same run: a copy of the standard library's `Lib/`
(without site-packages and __pycache__) in a temporary directory, so neither tool writes caches into the
interpreter's tree. "Cold" starts with an empty tag cache; "warm" builds a fresh map object over a filled
disk cache (a new session on an unchanged repository). Each side runs in its own interpreter (a worker
subprocess, imports done before timing); we report medians over --repeat runs and aider/ours ratios
(> 1 means ours is faster).

aider counts tokens through its model (tiktoken, which downloads its vocabulary); the worker gives it a
stand-in model counting ceil(chars / 4), the same estimate our repo_map uses, so both fill the same budget.

Reproduce:
    python3.11 -m venv .bench/aider-venv
    .bench/aider-venv/bin/python -m pip install aider-chat==0.86.2
    /work/main/.venv/bin/python bench/repo_map.py --aider-python .bench/aider-venv/bin/python --repeat 3

Without --aider-python (or if that interpreter cannot import aider) only ours is measured, and the output
says so. Options: --source DIR (another tree), --max-tokens N, --json PATH (also write the JSON there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def stdlib_dir() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])


# ---------------------------------------------------------------------------------------------- workers
# A worker builds maps `repeat` times cold and warm and prints {"cold": [...], "warm": [...], "map": text}.
# The aider worker runs under aider's interpreter, so it must not import anything from this repository.

def _worker_ours(root: Path, files: list[str], repeat: int, max_tokens: int, cache_dir: Path) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    from tools.repo_map import build_repo_map

    cold, warm, text = [], [], ""
    for _ in range(repeat):
        shutil.rmtree(cache_dir, ignore_errors=True)
        start = time.perf_counter()
        text = build_repo_map(root, [], max_tokens, cache_dir=cache_dir)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        build_repo_map(root, [], max_tokens, cache_dir=cache_dir)
        warm.append(time.perf_counter() - start)
    return {"cold": cold, "warm": warm, "map": text}


def _worker_aider(root: Path, files: list[str], repeat: int, max_tokens: int, cache_dir: Path) -> dict:
    from aider.io import InputOutput
    from aider.repomap import RepoMap

    class CharCountModel:
        """Stands in for aider's model: only token_count is used by RepoMap."""

        def token_count(self, text: str) -> int:
            return math.ceil(len(text) / 4)

    io = InputOutput(pretty=False, yes=True, fancy_input=False)
    paths = [str(root / rel) for rel in files]
    aider_cache = root / RepoMap.TAGS_CACHE_DIR

    def build() -> str:
        repo_map = RepoMap(map_tokens=max_tokens, root=str(root), main_model=CharCountModel(), io=io)
        return repo_map.get_repo_map([], paths) or ""

    cold, warm, text = [], [], ""
    for _ in range(repeat):
        shutil.rmtree(aider_cache, ignore_errors=True)
        start = time.perf_counter()
        text = build()
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        build()
        warm.append(time.perf_counter() - start)
    return {"cold": cold, "warm": warm, "map": text}


WORKERS = {"ours": _worker_ours, "aider": _worker_aider}


def _run_worker(python: str, name: str, root: Path, files_json: Path, repeat: int, max_tokens: int,
                cache_dir: Path) -> dict:
    command = [python, __file__, "--worker", name, "--root", str(root), "--files-json", str(files_json),
               "--repeat", str(repeat), "--max-tokens", str(max_tokens), "--cache-dir", str(cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=str(root))
    if done.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------- main

def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "__pycache__", "*.pyc"))


def _summary(result: dict) -> dict:
    text = result.pop("map")
    return {
        **result,
        "cold_median_s": statistics.median(result["cold"]),
        "warm_median_s": statistics.median(result["warm"]),
        "map_chars": len(text),
        "map_est_tokens": math.ceil(len(text) / 4),
        "map_lines": text.count("\n") + 1 if text else 0,
    }


def _aider_usable(python: str | None) -> tuple[bool, str]:
    if not python:
        return False, "no --aider-python given"
    try:
        done = subprocess.run([python, "-c", "import aider.repomap, aider; print(aider.__version__)"],
                              capture_output=True, text=True, timeout=120)
    except OSError as exc:
        return False, f"cannot run {python}: {exc}"
    if done.returncode != 0:
        return False, f"{python} cannot import aider: {done.stderr.strip().splitlines()[-1:]}"
    return True, done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", type=Path, default=None, help="tree to map (default: the stdlib's Lib/)")
    parser.add_argument("--aider-python", default=None, help="interpreter with aider-chat installed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON result here")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--files-json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    if args.worker:
        files = json.loads(args.files_json.read_text())
        result = WORKERS[args.worker](args.root, files, args.repeat, args.max_tokens, args.cache_dir)
        print(json.dumps(result))
        return 0

    sys.path.insert(0, str(REPO_ROOT))
    from tools.repo_map import source_files

    source = (args.source or stdlib_dir()).resolve()
    if not source.is_dir():
        parser.error(f"--source {source} is not a directory")
    if args.aider_python and os.sep in args.aider_python:
        args.aider_python = os.path.abspath(args.aider_python)  # not resolve(): a venv's python is a symlink
    aider_ok, aider_note = _aider_usable(args.aider_python)
    with tempfile.TemporaryDirectory(prefix="repo-map-bench-") as scratch:
        root = Path(scratch) / "tree"
        _copy_tree(source, root)
        files = source_files(root)
        files_json = Path(scratch) / "files.json"
        files_json.write_text(json.dumps(files))
        report: dict = {
            "source": str(source), "files": len(files), "repeat": args.repeat, "max_tokens": args.max_tokens,
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        }
        report["ours"] = _summary(_run_worker(sys.executable, "ours", root, files_json, args.repeat,
                                              args.max_tokens, Path(scratch) / "our-cache"))
        if aider_ok:
            report["aider_version"] = aider_note
            report["aider"] = _summary(_run_worker(args.aider_python, "aider", root, files_json, args.repeat,
                                                   args.max_tokens, Path(scratch) / "unused"))
            report["ratio_aider_over_ours"] = {
                phase: report["aider"][f"{phase}_median_s"] / report["ours"][f"{phase}_median_s"]
                for phase in ("cold", "warm")
            }
        else:
            report["aider"] = None
            report["note"] = f"aider not measured ({aider_note}); ours alone"
    print(json.dumps(report, indent=2))
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _table(report: dict) -> str:
    rows = [f"repo map of {report['source']} ({report['files']} files), budget {report['max_tokens']} tokens, "
            f"median of {report['repeat']}",
            f"{'':10}{'cold (s)':>10}{'warm (s)':>10}{'map tokens':>12}"]
    for name in ("ours", "aider"):
        side = report.get(name)
        if side:
            rows.append(f"{name:10}{side['cold_median_s']:>10.2f}{side['warm_median_s']:>10.3f}"
                        f"{side['map_est_tokens']:>12}")
    ratio = report.get("ratio_aider_over_ours")
    if ratio:
        rows.append(f"{'aider/ours':10}{ratio['cold']:>9.2f}x{ratio['warm']:>9.2f}x")
    else:
        rows.append(report["note"])
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
