"""An optimized BLAS for MLX's CPU backend on Linux.

The Linux `mlx[cpu]` wheel links a bundled reference BLAS (netlib `libblas.so.3`), so every float32 matrix product
runs at a few GFLOP/s and costs time linear in its rows: verifying 9 speculative tokens costs 9 decode steps. With
OpenBLAS in the process's global symbol scope *before* `mlx.core` loads, the dynamic linker binds MLX's
`cblas_sgemm` to OpenBLAS instead (measured here: 1 row x 1024 x 4096 goes from 1.1 to 0.4 ms, 512 rows from 550 to
17 ms). Importing `mlx_model` does this first thing; macOS (Accelerate) and other systems are left alone.

`GEMMA_AGENT_BLAS` chooses: unset or `auto` -> the system's OpenBLAS when there is one (Debian/Ubuntu:
`apt-get install libopenblas0-pthread`); a library path -> that library (an error if it cannot be loaded);
`bundled` -> MLX's own.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "GEMMA_AGENT_BLAS"

# Set by load_fast_blas(): the library now serving MLX's float32 products, or why it is MLX's bundled one.
active_library: str | None = None
reason: str = "not attempted"


def load_fast_blas() -> str | None:
    """Put OpenBLAS (or `$GEMMA_AGENT_BLAS`) in the global symbol scope before MLX loads; returns its path or None."""
    global active_library, reason
    if active_library is not None or reason != "not attempted":
        return active_library
    if not sys.platform.startswith("linux"):
        reason = f"not needed on {sys.platform}"
        return None
    if "mlx.core" in sys.modules:
        reason = "mlx.core was imported before mlx_model, so it is bound to its bundled BLAS"
        return None
    choice = os.environ.get(ENV_VAR, "").strip() or "auto"
    if choice == "bundled":
        reason = f"MLX's bundled reference BLAS (set by {ENV_VAR}=bundled)"
        return None
    library = ctypes.util.find_library("openblas") if choice == "auto" else choice
    if library is None:
        reason = "no OpenBLAS found (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
        return None
    try:
        handle = ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
        handle.cblas_sgemm  # noqa: B018 - the symbol MLX binds; a library without it would change nothing
    except (OSError, AttributeError) as exc:
        if choice != "auto":
            raise RuntimeError(f"{ENV_VAR}={library}: cannot use it as MLX's BLAS ({exc}); "
                               f"unset {ENV_VAR} or set it to 'bundled'") from None
        reason = f"{library} could not be loaded ({exc})"
        return None
    active_library, reason = library, "loaded before mlx.core"
    return library


def describe() -> str:
    """One line for diagnostics: which BLAS serves MLX's float32 products on the CPU."""
    return f"OpenBLAS ({active_library})" if active_library else f"MLX's bundled BLAS: {reason}"
