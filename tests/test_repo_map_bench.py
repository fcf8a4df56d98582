"""bench/repo_map.py end to end on a small real tree, without aider: ours alone, said so, JSON + table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_ours_alone_when_aider_is_missing(tmp_path):
    out_json = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "repo_map.py"), "--source", str(REPO_ROOT / "tools"),
         "--repeat", "2", "--max-tokens", "256", "--aider-python", str(tmp_path / "no-such-python"),
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out_json.read_text())
    assert report["aider"] is None and "ours alone" in report["note"]
    ours = report["ours"]
    assert len(ours["cold"]) == len(ours["warm"]) == 2 and report["files"] >= 10
    assert 0 < ours["map_est_tokens"] <= 256
    assert "ours alone" in done.stdout.splitlines()[-1]
    assert done.stdout.splitlines()[-3].split() == ["cold", "(s)", "warm", "(s)", "map", "tokens"]
