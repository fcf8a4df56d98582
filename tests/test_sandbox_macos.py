"""The generated Seatbelt profile for macOS (checked as text here; used with `sandbox-exec -p` there)."""
from __future__ import annotations

import pytest

from sandbox.macos import sbpl_profile, seatbelt_argv


def rules(profile: str) -> list[str]:
    return [line for line in profile.splitlines() if line.strip()]


def test_profile_denies_by_default_and_allows_only_workspace_and_tmp_writes():
    profile = sbpl_profile("/Users/me/work/proj", "/private/tmp/ga-1", home="/Users/me")
    lines = rules(profile)
    assert lines[0] == "(version 1)" and lines[1] == "(deny default)"
    writes = [line for line in lines if line.startswith("(allow file-write")]
    assert writes == ['(allow file-write* (subpath "/Users/me/work/proj") (subpath "/private/tmp/ga-1") '
                      '(literal "/dev/null") (literal "/dev/tty"))']
    assert "(deny network*)" in lines and not any("allow network" in line for line in lines)


def test_profile_order_makes_git_readonly_and_home_hidden_except_workspace():
    lines = rules(sbpl_profile("/Users/me/proj", "/private/tmp/x", home="/Users/me", readable=("/Users/me/.pyenv",)))
    # SBPL: the last matching rule wins, so each exception must follow the rule it overrides.
    deny_home = lines.index('(deny file-read* (subpath "/Users/me"))')
    assert lines.index('(allow file-read* (subpath "/Users/me/.pyenv"))') > deny_home
    assert lines.index('(allow file-read* (subpath "/Users/me/proj"))') > deny_home
    deny_git = lines.index('(deny file-write* (subpath "/Users/me/proj/.git"))')
    assert deny_git > max(i for i, line in enumerate(lines) if line.startswith("(allow file-write"))
    assert lines[-1] == "(deny network*)"


@pytest.mark.parametrize("bad", ['/tmp/a"b', "/tmp/a\\b", "/tmp/a\nb"])
def test_profile_refuses_paths_that_would_break_the_quoting(bad):
    with pytest.raises(ValueError, match="cannot be put in a sandbox profile"):
        sbpl_profile(bad, "/private/tmp/x")


def test_profile_refuses_relative_paths():
    with pytest.raises(ValueError, match="absolute"):
        sbpl_profile("proj", "/private/tmp/x")


def test_seatbelt_argv_passes_the_profile_inline():
    argv = seatbelt_argv(["/bin/sh", "-c", "true"], "/w", "/private/tmp/t", None)
    assert argv[:2] == ["sandbox-exec", "-p"] and argv[2].startswith("(version 1)")
    assert argv[3:] == ["/bin/sh", "-c", "true"]
