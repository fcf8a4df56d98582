"""The environment a sandboxed command sees: an allowlist, never secrets."""
from __future__ import annotations

import os
import re
from typing import Mapping

# Passed through from the caller's environment when present.
_ALLOWED = {"PATH", "LANG", "LANGUAGE", "TERM", "TZ", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR",
            "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8"}
_ALLOWED_PREFIXES = ("LC_",)
# Never passed, not even when the caller asks for it explicitly: a name that looks like a credential.
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


_NOT_SECRET = re.compile(r"GIT_CONFIG_KEY_\d+")  # names a git setting (git-config(1), GIT_CONFIG_COUNT)


def is_secret_name(name: str) -> bool:
    """True for variable names that look like they hold a credential."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET.fullmatch(name)


def sandbox_environment(home: str, extra: Mapping[str, str] | None = None,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Allowlisted variables from `base` (default os.environ), then `extra`, with HOME set to `home`.

    Secret-looking names are dropped from both; `extra` cannot smuggle a token in.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items()
           if (k in _ALLOWED or k.startswith(_ALLOWED_PREFIXES)) and not is_secret_name(k)}
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key or "\0" in key + value:
            raise ValueError(f"invalid environment entry {key!r}={value!r}")
        if not is_secret_name(key):
            env[key] = value
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env["HOME"] = home
    return env
