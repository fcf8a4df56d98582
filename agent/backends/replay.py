"""The `replay` backend: replays a transcript of raw model outputs (JSONL, one JSON string per line)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agent.backends import BackendError, BackendUnavailable, Completion, TextSink, estimate_tokens


def load_transcript(path: str | Path) -> list[str]:
    """Read a transcript file; raises BackendUnavailable naming the bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BackendUnavailable(f"cannot read replay transcript {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BackendUnavailable(f"replay transcript {path} is not UTF-8 text (byte {exc.start})") from None
    outputs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BackendUnavailable(f"{path}:{number}: not a JSON string ({exc.msg})") from None
        if not isinstance(value, str):
            raise BackendUnavailable(f"{path}:{number}: each line must be one JSON string (a raw model output)")
        outputs.append(value)
    return outputs


class ReplayBackend:
    """Returns the recorded outputs in order; `delay` seconds between streamed chunks mimic a live model."""

    name = "replay"

    def __init__(self, path: str | Path, *, delay: float = 0.0, chunk_chars: int = 8):
        self.path = Path(path)
        self.outputs = load_transcript(path)
        self.position = 0
        self.delay = delay
        self.chunk_chars = chunk_chars

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int, on_text: TextSink
    ) -> Completion:
        if self.position >= len(self.outputs):
            raise BackendError(f"replay transcript {self.path} has no more outputs (used all {len(self.outputs)})")
        raw = self.outputs[self.position]
        for start in range(0, len(raw), self.chunk_chars):
            if self.delay:
                time.sleep(self.delay)
            on_text(raw[start : start + self.chunk_chars])
        self.position += 1  # only a turn that streamed completely is consumed; Ctrl-C leaves it for a retry
        prompt = "".join(str(m.get("content") or "") for m in messages)
        return Completion(raw=raw, tokens_in=estimate_tokens(prompt), tokens_out=estimate_tokens(raw))

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def describe(self) -> str:
        return f"replay of {self.path} ({self.position}/{len(self.outputs)} outputs used)"
