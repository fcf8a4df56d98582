"""The agent loop: model turn, tool-call parsing, tool execution, results appended, until done or out of budget."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from agent.backends import Backend, BackendError, Completion
from agent.chat_format import ToolCall, assistant_messages
from agent.context import ContextManager

REPEAT_WARNING_AT = 3  # identical consecutive calls before the model is told it is repeating itself
DOOM_LOOP_AT = 5  # identical consecutive calls that end the session
MALFORMED_LIMIT = 4  # consecutive turns with unparseable calls that end the session


class ToolRunner(Protocol):
    def declarations(self) -> list[dict[str, Any]]: ...

    def call(self, name: str, arguments: dict[str, Any]) -> str: ...


class Listener:
    """What a front end sees of a session. Every method is optional; the default shows nothing."""

    def on_text(self, text: str) -> None: ...

    def on_thinking(self, text: str) -> None: ...

    def on_turn_end(self) -> None: ...

    def on_tool_call(self, call: ToolCall) -> None: ...

    def on_tool_result(self, call: ToolCall, result: str) -> None: ...

    def on_notice(self, message: str) -> None: ...


@dataclass
class Budget:
    """Limits; None means unlimited. Steps and seconds count per run (one request), tokens over the session."""

    max_steps: int = 30
    max_tokens: int | None = None
    max_seconds: float | None = None
    max_output_tokens: int = 2048


@dataclass
class Outcome:
    """Why a run stopped: finished, max_steps, max_tokens, max_time, doom_loop, context_full, backend_error,
    cancelled, or stopped (the caller's `should_stop` said so)."""

    reason: str
    detail: str = ""
    steps: int = 0


@dataclass
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    steps: int = 0
    recovered_calls: int = 0  # irregular call shapes the parser recovered (agent.call_parser)


Approver = Callable[[ToolCall], bool]


class Session:
    """A conversation with tools. History is append-only except for explicit compaction (see agent.context)."""

    def __init__(
        self,
        backend: Backend,
        tools: ToolRunner,
        system_prompt: str,
        *,
        budget: Budget | None = None,
        listener: Listener | None = None,
        needs_approval: Callable[[ToolCall], bool] = lambda call: False,
        approve: Approver = lambda call: True,
        context: ContextManager | None = None,
    ):
        self.backend = backend
        self.tools = tools
        self.declarations = tools.declarations()
        self.tool_names = {d["name"] for d in self.declarations}
        self.budget = budget or Budget()
        self.listener = listener or Listener()
        self.needs_approval = needs_approval
        self.approve = approve
        self.context = context
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
        self.usage = Usage()
        self._last_signature: str | None = None
        self._repeats = 0
        self._malformed = 0
        for notice in getattr(backend, "notices", ()):
            self.listener.on_notice(notice)

    def ask(self, text: str, should_stop: Callable[[], bool] | None = None) -> Outcome:
        """Add a user message and run the loop until the model finishes or a limit is hit."""
        self.messages.append({"role": "user", "content": text})
        return self.run(should_stop)

    def run(self, should_stop: Callable[[], bool] | None = None) -> Outcome:
        started, steps = time.monotonic(), 0
        while True:
            limit = self._limit_reached(steps, started)
            if limit:
                return limit
            if self.context is not None:
                problem = self.context.fit(self)
                if problem:
                    return Outcome("context_full", problem, steps)
            steps += 1
            try:
                outcome = self.step()
            except KeyboardInterrupt:
                return Outcome("cancelled", "cancelled by the user", steps)
            if outcome:
                outcome.steps = steps
                return outcome
            if should_stop and should_stop():
                return Outcome("stopped", "the goal was reached", steps)

    def _limit_reached(self, steps: int, started: float) -> Outcome | None:
        budget = self.budget
        if steps >= budget.max_steps:
            return Outcome("max_steps", f"stopped after {steps} model turns (--max-steps {budget.max_steps})", steps)
        if budget.max_tokens is not None and self.usage.tokens_in + self.usage.tokens_out >= budget.max_tokens:
            return Outcome("max_tokens", f"token budget of {budget.max_tokens} used up", steps)
        if budget.max_seconds is not None and time.monotonic() - started >= budget.max_seconds:
            return Outcome("max_time", f"time budget of {budget.max_seconds:.0f}s used up", steps)
        return None

    def step(self) -> Outcome | None:
        """One model turn and its tool calls. Returns an Outcome when the run should stop."""
        try:
            completion = self.backend.complete(
                self.messages, self.declarations, max_tokens=self.budget.max_output_tokens,
                on_text=self.listener.on_text, on_thinking=self.listener.on_thinking,
            )
        except BackendError as exc:
            self.listener.on_turn_end()
            return Outcome("backend_error", str(exc))
        self.listener.on_turn_end()
        self.usage.tokens_in += completion.tokens_in
        self.usage.tokens_out += completion.tokens_out
        self.usage.steps += 1
        self.usage.recovered_calls += len(completion.recovered)
        if completion.errors:
            return self._malformed_turn(completion)
        self._malformed = 0
        self.messages.extend(assistant_messages(completion.text, completion.calls))  # thinking is never kept
        if not completion.calls:
            return Outcome("finished", completion.text)
        for index, call in enumerate(completion.calls):
            try:
                result, doom = self._execute(call)
            except KeyboardInterrupt:
                for pending in completion.calls[index:]:  # keep every call answered so the history stays well-formed
                    self.messages.append({"role": "tool", "name": pending.name, "content": "error: cancelled by the user"})
                raise
            self.messages.append({"role": "tool", "name": call.name, "content": result})
            if doom:
                return Outcome("doom_loop", doom)
        return None

    def _malformed_turn(self, completion: Completion) -> Outcome | None:
        """None of the turn's calls run (some could not be read); the model gets the errors and the expected form."""
        self._malformed += 1
        self.messages.append({"role": "assistant", "content": completion.body})
        self.messages.append({"role": "user", "content": completion.error_message()})
        self.listener.on_notice(f"malformed tool call: {'; '.join(completion.errors)}")
        if self._malformed >= MALFORMED_LIMIT:
            return Outcome("doom_loop", f"the model produced malformed tool calls {self._malformed} turns in a row")
        return None

    def _execute(self, call: ToolCall) -> tuple[str, str | None]:
        signature = call.signature()
        self._repeats = self._repeats + 1 if signature == self._last_signature else 1
        self._last_signature = signature
        if self._repeats >= DOOM_LOOP_AT:
            reason = f"the model repeated the identical call {call.name} {self._repeats} times in a row"
            return f"error: session ended: {reason}", reason
        self.listener.on_tool_call(call)
        if self.needs_approval(call) and not self.approve(call):
            result = f"error: the user denied {call.name}; do not retry it, find another way or stop"
        else:
            result = self.tools.call(call.name, call.arguments)
        self.listener.on_tool_result(call, result)
        if self._repeats >= REPEAT_WARNING_AT:
            result += (
                f"\n\nnote: you have made this exact {call.name} call {self._repeats} times in a row and the result "
                "will not change. Do something different; repeating it further ends the session."
            )
        return result, None
