"""Run one request through the engine: start it (engine errors become API errors before any byte is sent),
then turn the raw output into text and call events and a finish reason."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from agent.serve.engine import Done, Engine, EngineFailure, GenRequest, Overloaded
from agent.serve.errors import ApiError
from agent.serve.turns import Call, Text, TurnSplitter

IDLE_TIMEOUT = 600.0  # seconds without any output from the engine before the request is failed


class Generation:
    def __init__(self, engine: Engine, request: GenRequest, stop: list[str] | None = None):
        self.engine = engine
        self.request = request
        self.splitter = TurnSplitter(stop=list(stop or []))
        self.done: Done | None = None
        self.first: str | Done | None = None
        self.stream = None

    async def start(self) -> None:
        """Submit and wait for the first output; raises ApiError when the request cannot be served."""
        try:
            self.stream = self.engine.submit(self.request)
        except Overloaded as exc:
            raise ApiError(503, str(exc)) from None
        self.first = await self._next()
        if self.request.prefix and self.engine.forces_prefix:
            self.splitter.feed(self.request.prefix)  # the forced start of a call counts as model output

    async def _next(self) -> str | Done:
        try:
            item = await asyncio.wait_for(self.stream.next(), IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            self.stream.cancel()
            raise ApiError(500, f"the engine produced nothing for {IDLE_TIMEOUT:.0f} s") from None
        if isinstance(item, EngineFailure):
            raise ApiError(item.status, item.message, code="context_length_exceeded" if item.status == 400 else None)
        return item

    async def events(self) -> AsyncIterator[Text | Call]:
        """Text and call events until the turn ends; afterwards `done` and `finish_reason` are set."""
        item = self.first
        try:
            while not isinstance(item, Done):
                for event in self.splitter.feed(item):
                    yield event
                if self.splitter.mode == "done":
                    self.stream.cancel()  # a stop sequence or native stop: no more tokens are needed
                item = await self._next()
                while isinstance(item, str) and not self.stream.queue.empty():
                    follow = self.stream.queue.get_nowait()  # coalesce pieces that arrived while we were busy
                    if not isinstance(follow, str):
                        self.stream.queue.put_nowait(follow)
                        break
                    item += follow
            for event in self.splitter.finish():
                yield event
            self.done = item
        finally:
            if self.done is None:
                self.stream.cancel()  # the client went away (or an error): free the slot at the next token

    async def collect(self) -> tuple[str, list[Call]]:
        """The whole turn: visible text and calls."""
        text, calls = [], []
        async for event in self.events():
            if isinstance(event, Text):
                text.append(event.text)
            else:
                calls.append(event)
        return "".join(text), calls

    @property
    def finish_reason(self) -> str:
        """OpenAI's vocabulary: tool_calls | length | stop (a stop sequence also gives stop)."""
        if self.splitter.calls:
            return "tool_calls"
        if self.splitter.stopped_by is None and self.done is not None and self.done.finish == "length":
            return "length"
        return "stop"

    def usage_numbers(self) -> tuple[int, int, int]:
        """(prompt tokens, of them cached, completion tokens)."""
        done = self.done or Done("stop", 0, 0, 0)
        return done.prompt_tokens, done.cached_tokens, done.completion_tokens
