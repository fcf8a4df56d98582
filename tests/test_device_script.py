"""bench/device.sh in its CPU dry-run mode: the accelerator run's steps (speculative curve, decode vs context
against mlx-lm) at tiny sizes, so the script does not fail on first contact with a GPU machine."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_device_script_dry_run(tmp_path):
    pytest.importorskip("mlx_lm")
    proc = subprocess.run(["bash", str(REPO_ROOT / "bench" / "device.sh"), "dry-run"], capture_output=True,
                          text=True, timeout=900, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path),
                                                       "HOME": str(tmp_path)})
    log = (tmp_path / "log.txt").read_text()
    assert proc.returncode == 0, log[-3000:] + proc.stderr[-2000:]
    assert "done (status 0)" in log
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert [c["context"] for c in curve["curves"]] == [64, 300]
    assert all(c["identical_to_plain"] for c in curve["curves"])
    decode = json.loads((tmp_path / "context_decode.json").read_text())
    assert set(decode["results"]) == {"ours kv=bf16", "ours kv=8", "ours kv=4", "mlx-lm kv=bf16"}
    for name, rows in decode["results"].items():
        assert "error" not in rows, (name, rows)
        assert all(rows[c]["decode_tps"] > 0 for c in ("64", "300")), name
    assert set(decode["ratio_vs_mlx_lm"]) == {f"ours kv={kv} @{c}" for kv in ("bf16", "8", "4") for c in (64, 300)}


def test_device_script_refuses_an_unknown_mode():
    proc = subprocess.run(["bash", str(REPO_ROOT / "bench" / "device.sh"), "launch"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "usage: bench/device.sh" in proc.stderr
