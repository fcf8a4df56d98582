"""macOS: a deny-by-default Seatbelt (SBPL) profile for `sandbox-exec -p`.

Same guarantees as the Linux sandbox where Seatbelt can express them: processes may run and read
files, write only under the workspace and a private temp dir, never under `.git`, and use no network.
Home-directory secrets are denied for reading, except the workspace. Rule order matters: in SBPL the
last matching rule wins (Apple's own profiles in /System/Library/Sandbox/Profiles rely on this).
"""
from __future__ import annotations

import os
import shutil
import sys


def _quote(path: str) -> str:
    """An SBPL string literal; refuses characters that could break out of it."""
    if any(ch in path for ch in '"\\\n\r\0'):
        raise ValueError(f"path {path!r} contains characters that cannot be put in a sandbox profile")
    return f'"{path}"'


def sbpl_profile(workspace: str, tmp_dir: str, home: str | None = None, readable: tuple[str, ...] = ()) -> str:
    """The profile text; `readable` re-allows reading toolchains under the hidden home. Paths must be absolute and already resolved (/tmp is /private/tmp on macOS)."""
    for path in (workspace, tmp_dir):
        if not os.path.isabs(path):
            raise ValueError(f"sandbox paths must be absolute, got {path!r}")
    ws, tmp = _quote(workspace), _quote(tmp_dir)
    lines = [
        "(version 1)",
        "(deny default)",
        "(allow process-exec)",
        "(allow process-fork)",
        "(allow signal (target same-sandbox))",
        "(allow sysctl-read)",
        "(allow mach-lookup)",
        "(allow ipc-posix-shm)",
        "(allow file-read*)",
    ]
    if home:
        lines.append(f"(deny file-read* (subpath {_quote(home)}))")
    lines += [f"(allow file-read* (subpath {_quote(path)}))" for path in readable]
    lines += [
        f"(allow file-read* (subpath {ws}))",
        f"(allow file-write* (subpath {ws}) (subpath {tmp}) (literal \"/dev/null\") (literal \"/dev/tty\"))",
        f"(deny file-write* (subpath {_quote(workspace.rstrip('/') + '/.git')}))",
        "(deny network*)",
    ]
    return "\n".join(lines) + "\n"


def seatbelt_available() -> bool:
    return sys.platform == "darwin" and shutil.which("sandbox-exec") is not None


def seatbelt_argv(argv: list[str], workspace: str, tmp_dir: str, home: str | None,
                  readable: tuple[str, ...] = ()) -> list[str]:
    """`readable`: more directories (the project's environment) re-allowed for reading under the hidden home."""
    toolchains = tuple(sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
                               *(os.path.realpath(path) for path in readable)}))
    return ["sandbox-exec", "-p", sbpl_profile(workspace, tmp_dir, home, toolchains), *argv]
