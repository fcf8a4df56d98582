"""Shared fixtures for the sandbox tests (not a test module itself)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sandbox

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the bubblewrap sandbox is Linux-only")


@pytest.fixture
def require_sandbox() -> None:
    """On Linux the sandbox must exist: a missing bubblewrap is a failure, not a skip."""
    reason = sandbox.unavailable_reason()
    assert reason is None, f"sandbox unavailable: {reason} (install bubblewrap: apt-get install bubblewrap)"


def git(cwd, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout
