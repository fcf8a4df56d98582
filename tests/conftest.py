"""Imported by pytest before any test module: `mlx_model` must load before `mlx.core` so that MLX binds the
optimized BLAS (see mlx_model/blas.py)."""
import mlx_model  # noqa: F401

import os
import sys

import pytest


@pytest.fixture(autouse=True)
def _project_python_is_the_test_venv(monkeypatch):
    """gemma-agent runs a project's tests with the environment active when it starts ($VIRTUAL_ENV) when the
    project has none of its own: make that this test run's environment, which has pytest, on every machine."""
    if not os.environ.get("VIRTUAL_ENV"):
        monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
