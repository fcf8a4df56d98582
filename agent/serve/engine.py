"""The server's engine: one model shared by all requests, run on one worker thread.

`MlxEngine` keeps `max_batch` slots, each a `PromptCache` whose live cache holds one conversation; all slots
share one store of prefix blocks, so a resent conversation or a common system prompt is prefilled once. New
requests are prefilled one at a time (in the slot whose cached tokens match best), then every active stream
advances together in one batched forward pass per token (`mlx_model.batch.BatchedCache`). With a drafter the
streams advance in turn by speculative rounds instead (drafting and batching are not combined). A cancelled
request (client gone, stop sequence hit) leaves its slot at the next step.

`SerialEngine` serves any agent backend (the replay transcript, for testing clients) one request at a time.

Both hand the HTTP layer a `Stream`: raw output pieces (Gemma 4 native text), then a `Done` with the usage, or
an `EngineFailure` that fails that request only.
"""
from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass, field
from typing import Any

from agent.backends import Backend, BackendError, estimate_tokens
from agent.serve import fmt

MAX_QUEUE = 256  # waiting requests beyond this are refused with 503 (bounds memory and wait)


@dataclass
class GenRequest:
    """What to generate. Chat APIs give messages + tools (and a forced `prefix` for tool_choice); the legacy
    completions API gives raw `text` instead."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    prefix: str = ""
    text: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class Done:
    finish: str  # "stop" (end of turn or stop token) | "length"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass
class EngineFailure:
    status: int  # 400: the request cannot be served (e.g. too long); 500: the engine failed on it
    message: str


class Overloaded(Exception):
    """Too many requests are waiting."""


class Stream:
    """One request's output as the HTTP layer sees it: `await next()` gives str | Done | EngineFailure."""

    def __init__(self, request: GenRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def put(self, item: str | Done | EngineFailure) -> None:
        """Called from the worker thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def next(self) -> str | Done | EngineFailure:
        return await self.queue.get()

    def cancel(self) -> None:
        """Stop generating for this request (its slot is freed at the next step)."""
        self.cancelled.set()


class Engine:
    """A worker thread draining a queue of streams; subclasses implement `_work` and `describe`."""

    model_id = "model"
    max_context = 1 << 30
    forces_prefix = True  # the model continues GenRequest.prefix (tool_choice enforcement)

    def __init__(self) -> None:
        self.pending: collections.deque[Stream] = collections.deque()
        self.wake = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="gemma-agent-engine", daemon=True)
        self.thread.start()

    def submit(self, request: GenRequest) -> Stream:
        stream = Stream(request, asyncio.get_running_loop())
        with self.wake:
            if len(self.pending) >= MAX_QUEUE:
                raise Overloaded(f"{len(self.pending)} requests are already waiting; retry later")
            self.pending.append(stream)
            self.wake.notify()
        return stream

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def prompt_tokens(self, request: GenRequest) -> int:
        """Tokens of the request's prompt (for count_tokens and the context check)."""
        return self.count_tokens(request.text if request.text is not None
                                 else fmt.render_prompt(request.messages, request.tools) + request.prefix)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_id, "queue_depth": len(self.pending)}

    def close(self) -> None:
        with self.wake:
            self.closing = True
            self.wake.notify()
        self.thread.join(timeout=10)

    def _take(self, block: bool) -> Stream | None:
        with self.wake:
            while block and not self.pending and not self.closing:
                self.wake.wait(timeout=1.0)
            return self.pending.popleft() if self.pending else None

    def _run(self) -> None:
        while not self.closing:
            self._work()

    def _work(self) -> None:
        raise NotImplementedError


class SerialEngine(Engine):
    """Any agent `Backend` (replay, ...), one request at a time; the raw text of its turn is streamed on."""

    forces_prefix = False  # a backend takes messages, not a prompt it could continue
    CHUNK_CHARS = 16

    def __init__(self, backend: Backend, model_id: str):
        self.backend = backend
        self.model_id = model_id
        super().__init__()

    def _work(self) -> None:
        stream = self._take(block=True)
        if stream is None:
            return
        request = stream.request
        messages = request.messages or [{"role": "user", "content": request.text or ""}]
        try:
            completion = self.backend.complete(messages, request.tools, max_tokens=request.max_tokens,
                                               on_text=lambda piece: None)
        except BackendError as exc:
            stream.put(EngineFailure(500, str(exc)))
            return
        # The raw turn (markers included) is what the API modules read; sent in pieces, as a model streams.
        for start in range(0, len(completion.raw), self.CHUNK_CHARS):
            if stream.cancelled.is_set():
                break
            stream.put(completion.raw[start : start + self.CHUNK_CHARS])
        stream.put(Done("stop", completion.tokens_in, 0, completion.tokens_out))

    def describe(self) -> str:
        return self.backend.describe()
