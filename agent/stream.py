"""Filter a streamed model turn down to what a person should see: visible text, and thinking apart from it."""
from __future__ import annotations

from typing import Callable

from agent.chat_format import CALL_END, CALL_START, CHANNEL_END, CHANNEL_START, STOP_STRINGS

Sink = Callable[[str], None]
_STRAY = (CALL_END, CHANNEL_END)  # dropped outside a block (see agent.call_parser)
_MARKERS = (CALL_START, CHANNEL_START, *_STRAY, *STOP_STRINGS)
_LABEL = "thought\n"  # a thought channel's name line


class VisibleText:
    """Feed raw chunks; forwards visible text to `sink` and thought-channel text to `thinking_sink`, hides call
    markup, stops at a stop marker, and holds back a possible partial marker at the end. `in_thought`: the prompt
    opened a thought channel, so the output starts inside one."""

    def __init__(self, sink: Sink, thinking_sink: Sink | None = None, *, in_thought: bool = False):
        self.sink = sink
        self.thinking_sink = thinking_sink
        self.pending = ""
        self.closing: str | None = CHANNEL_END if in_thought else None  # the end marker of the open block
        self.label = ""  # what is left of a channel's name line to skip
        self.stopped = False

    def _inside(self, text: str) -> None:
        if self.closing == CHANNEL_END and self.thinking_sink and text:
            self.thinking_sink(text)

    def feed(self, chunk: str) -> None:
        self.pending += chunk
        while self.pending and not self.stopped:
            if self.label:
                if self.label.startswith(self.pending) and len(self.pending) < len(self.label):
                    return  # maybe the name line, not complete yet
                if self.pending.startswith(self.label):
                    self.pending = self.pending[len(self.label) :]
                self.label = ""
                continue
            if self.closing:
                end = self.pending.find(self.closing)
                if end >= 0:
                    self._inside(self.pending[:end])
                    self.pending = self.pending[end + len(self.closing) :]
                    self.closing = None
                    continue
                keep = _partial(self.pending, (self.closing,))
                self._inside(self.pending[: len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep :]
                return
            hits = [(self.pending.find(m), m) for m in _MARKERS if m in self.pending]
            if hits:
                index, marker = min(hits)
                if index:
                    self.sink(self.pending[:index])
                self.pending = self.pending[index + len(marker) :]
                if marker in STOP_STRINGS:
                    self.stopped = True
                    self.pending = ""
                elif marker == CALL_START:
                    self.closing = CALL_END
                elif marker == CHANNEL_START:
                    self.closing, self.label = CHANNEL_END, _LABEL
                continue
            keep = _partial(self.pending, _MARKERS)
            visible = self.pending[: len(self.pending) - keep]
            if visible:
                self.sink(visible)
            self.pending = self.pending[len(visible) :]
            return

    def flush(self) -> None:
        if self.pending and not self.stopped:
            if self.closing:
                self._inside(self.pending)
            else:
                self.sink(self.pending)
        self.pending = ""


def _partial(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that could be the start of one of `markers`."""
    return max((k for m in markers for k in range(1, len(m)) if text.endswith(m[:k])), default=0)
