"""Filter a streamed model turn down to the text a person should see (tool-call markup hidden)."""
from __future__ import annotations

from typing import Callable

from mlx_model.chat_format import CALL_END, CALL_START, CHANNEL_END, CHANNEL_START, STOP_STRINGS

_HIDDEN = ((CALL_START, CALL_END), (CHANNEL_START, CHANNEL_END))
_MARKERS = tuple(start for start, _ in _HIDDEN) + STOP_STRINGS


class VisibleText:
    """Feed raw chunks; forwards visible text to `sink`, holding back a possible partial marker at the end."""

    def __init__(self, sink: Callable[[str], None]):
        self.sink = sink
        self.pending = ""
        self.closing: str | None = None  # the end marker we are waiting for inside a hidden block
        self.stopped = False

    def feed(self, chunk: str) -> None:
        self.pending += chunk
        while self.pending and not self.stopped:
            if self.closing:
                end = self.pending.find(self.closing)
                if end < 0:
                    self.pending = self.pending[-len(self.closing) :]
                    return
                self.pending = self.pending[end + len(self.closing) :]
                self.closing = None
                continue
            hits = [(self.pending.find(m), m) for m in _MARKERS if m in self.pending]
            if hits:
                index, marker = min(hits)
                self.sink(self.pending[:index]) if index else None
                self.pending = self.pending[index + len(marker) :]
                closing = dict(_HIDDEN).get(marker)
                if closing is None:
                    self.stopped = True
                    self.pending = ""
                self.closing = closing
                continue
            keep = max((k for m in _MARKERS for k in range(1, len(m)) if self.pending.endswith(m[:k])), default=0)
            visible = self.pending[: len(self.pending) - keep]
            if visible:
                self.sink(visible)
            self.pending = self.pending[len(visible) :]
            return

    def flush(self) -> None:
        if self.pending and not self.closing and not self.stopped:
            self.sink(self.pending)
        self.pending = ""
