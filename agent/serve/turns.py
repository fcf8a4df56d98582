"""Split a streamed model turn into visible text and tool calls, applying the request's stop sequences.

Pieces of raw output go in; `Text` and `Call` events come out as soon as they are certain: text is held back
only while it could be the start of a marker or stop sequence, a call is emitted when its block closes, and
thought-channel content is dropped. Every API module streams these events in its own shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.serve import fmt


@dataclass
class Text:
    text: str


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]


@dataclass
class TurnSplitter:
    stop: list[str] = field(default_factory=list)  # the request's stop sequences
    buffer: str = ""
    mode: str = "text"  # text | call | thought
    stopped_by: str | None = None  # the stop sequence that ended the turn
    calls: int = 0

    def feed(self, piece: str) -> list[Text | Call]:
        """Events made certain by `piece`; after a stop sequence or a native stop, further input is ignored."""
        if self.stopped_by is not None or self.mode == "done":
            return []
        self.buffer += piece
        events: list[Text | Call] = []
        while self.buffer and self.mode != "done":
            if self.mode == "call":
                end = fmt.call_end(self.buffer)
                if end < 0:
                    break
                block, self.buffer = fmt.CALL_START + self.buffer[:end], self.buffer[end:]
                parsed = fmt.parse_call(block)
                events.append(Call(*parsed) if parsed else Text(block))
                self.calls += parsed is not None
                self.mode = "text"
            elif self.mode == "thought":
                end = self.buffer.find(fmt.THOUGHT_END)
                if end < 0:
                    self.buffer = self.buffer[-len(fmt.THOUGHT_END):]
                    break
                self.buffer, self.mode = self.buffer[end + len(fmt.THOUGHT_END):], "text"
            else:
                if not self._text(events):
                    break
        return [e for e in events if not isinstance(e, Text) or e.text]

    def _text(self, events: list) -> bool:
        """Emit text up to the next marker and switch mode; False when more input is needed."""
        markers = [fmt.CALL_START, fmt.THOUGHT_START, *fmt.STOP_STRINGS, *self.stop]
        found = [(self.buffer.find(m), m) for m in markers if m and m in self.buffer]
        if not found:
            keep = max((k for m in markers for k in range(1, len(m)) if self.buffer.endswith(m[:k])), default=0)
            events.append(Text(self.buffer[: len(self.buffer) - keep]))
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return False
        index, marker = min(found, key=lambda f: (f[0], -len(f[1])))
        events.append(Text(self.buffer[:index]))
        self.buffer = self.buffer[index + len(marker):]
        if marker == fmt.CALL_START:
            self.mode = "call"
        elif marker == fmt.THOUGHT_START:
            self.mode = "thought"
        else:
            self.mode = "done"
            if marker in self.stop and marker not in fmt.STOP_STRINGS:
                self.stopped_by = marker
        return True

    def finish(self) -> list[Text | Call]:
        """Events for what is left when generation ends: held-back text, or an unclosed call kept as text."""
        events: list[Text | Call] = []
        if self.mode == "text" and self.buffer:
            events.append(Text(self.buffer))
        elif self.mode == "call":
            events.append(Text(fmt.CALL_START + self.buffer))
        self.buffer = ""
        return events
