"""Imported by pytest before any test module: `mlx_model` must load before `mlx.core` so that MLX binds the
optimized BLAS (see mlx_model/blas.py)."""
import mlx_model  # noqa: F401
