"""Sandboxed command execution: no network, writes only inside the workspace, resource limits."""
