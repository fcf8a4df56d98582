"""mlx_model binds MLX's float32 products to OpenBLAS on Linux when it loads first (mlx_model/blas.py)."""
from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only BLAS swap")

PROBE = """
import sys
{first}
import mlx.core as mx, mlx_model.blas as blas
maps = open("/proc/self/maps").read()
a = mx.random.normal((64, 96)); b = mx.random.normal((96, 80))
import numpy as np
err = float(np.abs(np.array(a @ b) - np.array(a).astype(np.float64) @ np.array(b).astype(np.float64)).max())
print(repr(blas.active_library), "libopenblas" in maps, err < 1e-3)
print(blas.describe())
"""


def probe(first: str, **env: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.skipif(ctypes.util.find_library("openblas") is None, reason="no OpenBLAS installed")
def test_openblas_serves_mlx_when_mlx_model_loads_first():
    facts, described = probe("import mlx_model")
    assert facts.split()[1:] == ["True", "True"]
    assert "openblas" in facts.split()[0] and described.startswith("OpenBLAS")


def test_bundled_blas_when_asked_or_when_mlx_loaded_first():
    facts, described = probe("import mlx_model", GEMMA_AGENT_BLAS="bundled")
    assert facts.split() == ["None", "False", "True"] and "GEMMA_AGENT_BLAS=bundled" in described
    facts, described = probe("import mlx.core; import mlx_model")
    assert facts.split() == ["None", "False", "True"] and "imported before mlx_model" in described


def test_unloadable_blas_path_is_a_clear_error(tmp_path):
    bogus = tmp_path / "libnot-a-blas.so"
    bogus.write_text("not an ELF file")
    result = subprocess.run([sys.executable, "-c", "import mlx_model"], capture_output=True, text=True,
                            env={**os.environ, "GEMMA_AGENT_BLAS": str(bogus)}, timeout=120)
    assert result.returncode != 0
    assert f"GEMMA_AGENT_BLAS={bogus}: cannot use it as MLX's BLAS" in result.stderr
    assert "set it to 'bundled'" in result.stderr
