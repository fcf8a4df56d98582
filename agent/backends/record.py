"""`--record FILE`: write every raw model output of a live session as a replayable transcript."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.backends import Backend, Completion, TextSink


class RecordingBackend:
    """Wraps a backend and appends each completed turn's raw output to a JSONL transcript, flushed per turn."""

    def __init__(self, inner: Backend, path: str | Path):
        self.inner = inner
        self.name = inner.name
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")
        self.notices = getattr(inner, "notices", [])

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int, on_text: TextSink,
        on_thinking: TextSink | None = None,
    ) -> Completion:
        completion = self.inner.complete(messages, tools, max_tokens=max_tokens, on_text=on_text,
                                         on_thinking=on_thinking)
        with self.path.open("a", encoding="utf-8") as transcript:
            transcript.write(json.dumps(completion.raw) + "\n")
        return completion

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def describe(self) -> str:
        return f"{self.inner.describe()}, recording to {self.path}"
