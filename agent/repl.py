"""The interactive REPL: prompt_toolkit input, streamed answers, tool lines, slash commands, Ctrl-C handling.

The agent works in an isolated workspace (a worktree of your repository); /diff shows its changes, /undo reverts
the last request's changes, and /apply copies them into your working tree."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from agent.backends import Backend
from agent.config import Config
from agent.context import ContextManager
from agent.prompt import build_system_prompt
from agent.session import Budget, Listener, Session
from mlx_model.chat_format import ToolCall

HELP = """Type a request and press Enter (Esc then Enter, or Alt-Enter, for a new line). Ctrl-C cancels the
current generation or command; Ctrl-D exits.
  /help     this help              /diff     changes not applied to your tree yet
  /undo     revert the last request's changes (the model is told)
  /apply    copy the changes into your working tree (again after more changes)
  /test     run the test suite in the workspace
  /model    show the backend and model
  /compact  summarize the conversation to free context
  /clear    start a new conversation (changes are kept)
  /tokens   tokens in the context and used so far
  /exit     quit (asks about changes not applied yet; without a terminal they are saved as a patch)"""


def history_path() -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "gemma-agent" / "history"


class Console(Listener):
    """Prints the session as it happens: streamed text, one line per tool call with a one-line result."""

    def __init__(self, out: TextIO):
        self.out = out

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def on_text(self, text: str) -> None:
        self.write(text)

    def on_turn_end(self) -> None:
        self.write("\n")

    def on_tool_call(self, call: ToolCall) -> None:
        from agent.commands.common import describe_arguments

        self.write(f"  -> {call.name}({describe_arguments(call.arguments, show=_short)})\n")

    def on_tool_result(self, call: ToolCall, result: str) -> None:
        lines = result.strip().splitlines() or [""]
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        self.write(f"     {_short(lines[0], 100)}{more}\n")

    def on_notice(self, message: str) -> None:
        self.write(f"[{message}]\n")


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Repl:
    """One interactive session bound to a workspace."""

    def __init__(self, config: Config, backend: Backend, workspace: Any, out: TextIO = sys.stdout,
                 ask: Callable[[str], str] | None = None, python: Any = None, interactive: bool | None = None):
        from tools.toolbox import Toolbox
        from agent.fixer import FixSetupError, project_python, tool_settings

        self.config, self.backend, self.workspace, self.out = config, backend, workspace, out
        if python is None:
            try:
                python = project_python(Path(workspace.source), config)
            except FixSetupError:
                python = None  # commands then run with the PATH as it is
        self.python = python
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.settings = tool_settings(config, workspace, python)
        self.undo_note = ""  # told to the model with the next request
        self.console = Console(out)
        self.ask_user = ask or (lambda question: input(question))
        self.context = ContextManager(config.context_tokens, config.max_output_tokens)
        self.session = Session(
            backend, Toolbox(self.settings), build_system_prompt(Path(workspace.path)),
            budget=Budget(config.max_steps, config.max_tokens, config.max_time, config.max_output_tokens),
            listener=self.console, needs_approval=self.needs_approval, approve=self.approve, context=self.context,
        )
        self.commands: dict[str, Callable[[], bool | None]] = {
            "/help": lambda: self.console.write(HELP + "\n"), "/diff": self.diff, "/undo": self.undo,
            "/apply": self.apply, "/test": self.test, "/model": lambda: self.console.write(backend.describe() + "\n"),
            "/compact": self.compact, "/clear": self.clear, "/tokens": self.tokens, "/exit": lambda: True,
        }

    # approval for actions outside the sandbox policy
    def needs_approval(self, call: ToolCall) -> bool:
        return call.name in ("run", "run_tests") and not self.config.sandbox

    def approve(self, call: ToolCall) -> bool:
        if self.config.approve != "ask":
            return self.config.approve == "auto"
        return self.ask_user(f"allow {call.name}({_short(call.arguments, 80)}) outside the sandbox? [y/N] ") \
            .strip().lower() in ("y", "yes")

    def handle(self, line: str) -> bool:
        """Handle one input; True means exit."""
        text = line.strip()
        if not text:
            return False
        if text.startswith("/"):
            command = self.commands.get(text.split()[0])
            if command is None:
                self.console.write(f"unknown command {text.split()[0]}; /help lists them\n")
                return False
            return bool(command())
        before = self.workspace.diff()
        note, self.undo_note = self.undo_note, ""
        outcome = self.session.ask(note + text)
        if outcome.reason == "cancelled":
            self.console.write("[cancelled]\n")
        elif outcome.reason not in ("finished",):
            self.console.write(f"[stopped: {outcome.detail}]\n")
        if self.workspace.diff() != before:
            self.workspace.checkpoint(f"after request: {text[:60]}")
        self.tokens(short=True)
        return False

    def diff(self) -> None:
        patch = self.workspace.diff(self.workspace.applied)
        self.console.write(patch if patch else "no changes that are not applied yet\n")

    def undo(self) -> None:
        files = self.workspace.undo_preview()
        if not self.workspace.undo():
            self.console.write("nothing to undo\n")
            return
        self.undo_note = (f"[The user undid your last changes ({', '.join(files)}); those files are back to "
                          "their previous content. Read them again before editing.]\n")
        self.console.write(f"undid the last request's changes: {', '.join(files)}\n")

    def apply(self) -> None:
        if not self.workspace.diff(self.workspace.applied):
            self.console.write("no changes to apply\n")
            return
        if self.config.approve == "never" or (
            self.config.approve == "ask"
            and self.ask_user("apply the changes to your working tree? [y/N] ").strip().lower() not in ("y", "yes")
        ):
            self.console.write("not applied\n")
            return
        self._apply()

    def _apply(self) -> bool:
        try:
            files = self.workspace.apply()
        except Exception as exc:  # apply refuses without touching anything; say why
            self.console.write(f"could not apply: {exc}\n")
            return False
        self.console.write(f"applied to your working tree: {', '.join(files) or 'no files'}\n")
        return True

    def leave(self) -> None:
        """On /exit or Ctrl-D: changes not applied yet are applied, saved as a patch or discarded, as the user
        answers; without a terminal they are saved and the path printed."""
        patch = self.workspace.diff(self.workspace.applied)
        if not patch:
            return
        if self.interactive:
            try:
                answer = self.ask_user("changes not applied to your tree: [a]pply, [s]ave as a patch, "
                                       "[d]iscard? [s] ").strip().lower()
            except (EOFError, KeyboardInterrupt):
                answer = "s"
            if answer in ("d", "discard"):
                self.console.write("discarded\n")
                return
            if answer in ("a", "apply") and self._apply():
                return
        from agent.commands.fix import write_atomically
        from agent.hook import git_path

        path = git_path(self.workspace.source, f"gemma-agent/unapplied-{time.strftime('%Y%m%d-%H%M%S')}.patch")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, patch)
        self.console.write(f"changes not applied were saved to {path}; apply them with: git apply {path}\n")

    def test(self) -> None:
        from tools.base import ToolError
        from tools.shell import run_test_suite

        try:
            report = run_test_suite(self.settings)
        except ToolError as exc:  # e.g. no sandbox: the session and its changes stay
            self.console.write(f"cannot run the tests: {exc}\n")
            return
        self.console.write(f"{report.passed} passed, {report.failed} failed, {report.errors} errors, "
                           f"{report.skipped} skipped\n")
        for test_id, _ in report.failures:
            self.console.write(f"  FAILED {test_id}\n")

    def compact(self) -> None:
        problem = self.context.compact(self.session)
        if problem:
            self.console.write(f"[could not compact: {problem}]\n")

    def clear(self) -> None:
        self.session.messages = self.session.messages[:1]
        self.console.write("conversation cleared\n")

    def tokens(self, short: bool = False) -> None:
        used = self.context.count(self.session)
        usage = self.session.usage
        if short:
            self.console.write(f"[{used}/{self.config.context_tokens} tokens in context]\n")
        else:
            self.console.write(f"context: {used} of {self.config.context_tokens} tokens; session so far: "
                               f"{usage.tokens_in} in, {usage.tokens_out} out, {usage.steps} model turns\n")


def run_repl(repl: Repl) -> int:
    """Read-eval loop with prompt_toolkit: history file, multi-line editing, Ctrl-C and Ctrl-D handling."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    # Ctrl-C must cancel a running request even when we were started with SIGINT ignored (a script's `cmd &`,
    # nohup): Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bindings = KeyBindings()

    @bindings.add("enter")
    def _(event: Any) -> None:
        event.current_buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    def _(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    prompt = PromptSession(history=FileHistory(str(path)), multiline=True, key_bindings=bindings)
    python = f"; tests run with {repl.python.describe()}" if repl.python else ""
    repl.console.write(f"gemma-agent ({repl.backend.describe()}) in {repl.workspace.source}{python}. "
                       "/help for commands.\n")
    while True:
        try:
            line = prompt.prompt("gemma> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            repl.leave()
            return 0
        try:
            if repl.handle(line):
                repl.leave()
                return 0
        except KeyboardInterrupt:
            repl.console.write("\n[cancelled]\n")
