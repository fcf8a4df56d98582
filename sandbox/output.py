"""Capturing a stream of unknown length in bounded memory: keep the head and the tail."""
from __future__ import annotations


class CappedOutput:
    """Keeps at most `limit` bytes: the first half and the most recent half once the stream is longer."""

    def __init__(self, limit: int):
        if limit < 2:
            raise ValueError(f"output limit must be at least 2 bytes, got {limit}")
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total <= self.limit:
            self.head += chunk
            return
        half = self.limit // 2
        if len(self.head) > half:  # the stream just outgrew the limit: the head keeps only its first half
            self.tail += self.head[half:]
            del self.head[half:]
        elif not self.tail:
            fill = half - len(self.head)
            self.head += chunk[:fill]
            chunk = chunk[fill:]
        self.tail += chunk
        excess = len(self.tail) - (self.limit - half)
        if excess > 0:
            del self.tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace")
        omitted = self.total - len(self.head) - len(self.tail)
        return (bytes(self.head).decode("utf-8", errors="replace")
                + f"\n[... {omitted} bytes of output omitted ...]\n"
                + bytes(self.tail).decode("utf-8", errors="replace"))
