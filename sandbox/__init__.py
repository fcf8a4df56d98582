"""Sandboxed command execution: no network, writes only inside the workspace, resource limits."""
from sandbox.runner import SandboxResult, SandboxUnavailable, available, run, unavailable_reason
from sandbox.view import View

__all__ = ["SandboxResult", "SandboxUnavailable", "available", "run", "unavailable_reason", "View"]
