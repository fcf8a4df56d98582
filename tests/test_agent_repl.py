"""The REPL driven through a real pseudo-terminal: type, streamed output, tool lines, Ctrl-C, /diff, /undo, /exit."""
import json
import os
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.fixtures.agent.sample_repo import make_sample_repo

ROOT = Path(__file__).resolve().parent.parent
S = '<|"|>'
EDIT = (f"Looking at add.<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
        f"new:{S}return a + b{S}}}<tool_call|>")
RUN_SLOW = f"<|tool_call>call:run_tests{{selector:{S}tests/test_slow.py{S}}}<tool_call|>"
STORY = "Once upon a time " + "there was a very long story " * 60 + "THE END"


def prompt(child):
    """Wait for the prompt, then give prompt_toolkit time to enter raw mode (which discards early input)."""
    child.expect("gemma>")
    time.sleep(0.3)


@pytest.fixture
def repl(tmp_path):
    repo = make_sample_repo(tmp_path)
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("".join(json.dumps(o) + "\n" for o in [EDIT, "I fixed add.", RUN_SLOW, STORY]))
    (repo / ".git/info/exclude").write_text(".gemma-agent.toml\n")
    (repo / "tests/test_slow.py").write_text("import time\n\n\ndef test_slow():\n    time.sleep(60)\n")
    (repo / ".gemma-agent.toml").write_text(
        f'backend = "replay"\napprove = "auto"\n[replay]\ntranscript = "{transcript}"\ndelay = 0.02\n'
        '[sandbox]\nenabled = false\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1",
           "XDG_STATE_HOME": str(tmp_path / "state")}
    # Started with SIGINT ignored, as `cmd &` in a script or nohup leaves it: Ctrl-C must still cancel.
    child = pexpect.spawn(sys.executable, ["-m", "agent.cli"], cwd=str(repo), env=env, encoding="utf-8",
                          timeout=60, dimensions=(40, 200),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    yield child, repo
    child.close(force=True)


def test_repl_session_through_a_pty(repl):
    child, repo = repl
    prompt(child)
    child.sendline("please fix add")
    child.expect("Looking at add.")
    child.expect(r"-> edit_file\(path=calc/ops.py")
    child.expect("I fixed add.")
    child.expect(r"tokens in context\]")
    prompt(child)

    child.sendline("/diff")
    child.expect(r"\+    return a \+ b")
    prompt(child)
    assert "return a - b" in (repo / "calc/ops.py").read_text()  # the user's tree is untouched

    child.sendline("run the slow test")
    child.expect(r"-> run_tests\(selector=tests/test_slow.py\)")
    started = time.monotonic()
    time.sleep(1.0)
    child.sendcontrol("c")  # cancels the running command, not the session
    child.expect(r"\[cancelled\]")
    assert time.monotonic() - started < 20
    assert "outside the sandbox?" not in child.before  # approve = auto: the command itself was running
    prompt(child)

    child.sendline("tell me a story")
    child.expect("Once upon a time")
    child.sendcontrol("c")
    child.expect(r"\[cancelled\]")
    prompt(child)
    assert "THE END" not in child.before

    child.sendline("/undo")
    child.expect("undid the last request's changes")
    prompt(child)
    child.sendline("/diff")
    child.expect("no changes")
    prompt(child)

    child.sendline("/tokens")
    child.expect(r"context: \d+ of 32768 tokens")
    prompt(child)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_repl_ctrl_d_exits(repl):
    child, _ = repl
    prompt(child)
    child.sendline("/help")
    child.expect("/compact")
    prompt(child)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
