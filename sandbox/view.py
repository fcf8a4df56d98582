"""What a sandboxed command sees of the project besides its workspace: the same paths, the same files.

The workspace (the agent's copy) appears at the user's repository path, so whatever points into the repository
(editable installs, `.pth` files, absolute shebangs, paths in build outputs) resolves to the agent's copy.
`shared` entries of the user's tree (ignored files: environments, build outputs, `*.egg-info`, compiled
extensions; large untracked files) are shown read-only over it; they are never copied into the workspace, git's
objects or the patch. `read_only` directories outside the repository (an environment, its base interpreter)
are shown at their own paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class View:
    path: str  # absolute path the workspace appears at inside the sandbox (the user's repository)
    source: str = ""  # the user's tree `shared` entries come from (default: `path`)
    shared: tuple[str, ...] = ()  # paths relative to `source`, shown read-only over the workspace
    read_only: tuple[str, ...] = ()  # absolute directories shown read-only at their own paths

    def shared_sources(self) -> list[tuple[str, str]]:
        """(path in the user's tree, path relative to the workspace) for each shared entry that exists."""
        root = Path(self.source or self.path)
        return [(str(root / rel), rel) for rel in self.shared if os.path.exists(root / rel)]  # no dangling links


def missing_paths(workspace: Path, rel: str) -> list[Path]:
    """The paths (shallowest first) a mount of `rel` would create in the workspace because they do not exist."""
    missing: list[Path] = []
    path = workspace
    for part in Path(rel).parts:
        path = path / part
        if missing or not os.path.lexists(path):
            missing.append(path)
    return missing


def remove_mount_points(created: list[Path]) -> None:
    """Remove the empty files and directories bubblewrap made as mount points (deepest first)."""
    for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_symlink():
                continue
            if path.is_dir():
                path.rmdir()
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()
        except OSError:
            continue  # not empty: something the command wrote there; keep it
