"""Model backends behind one small interface: produce a parsed model turn (text, calls, thinking, raw text)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from agent.call_parser import ParsedTurn

TextSink = Callable[[str], None]


class BackendError(Exception):
    """The backend cannot produce a turn (server down, transcript exhausted, ...): the session ends with this."""


class BackendUnavailable(BackendError):
    """The backend cannot start at all (no weights, no URL): a setup error with an actionable message."""


@dataclass
class Completion(ParsedTurn):
    """One model turn, parsed: visible `text`, `calls`, `thinking`, call `errors`, `recovered` irregularities,
    plus `raw`, the turn in Gemma 4 native text (what `--record` writes and `replay` reads back).

    `tokens_in` counts the prompt tokens processed for this turn: with mlx only those after the cached prefix,
    with a server what it reports as prompt tokens (an estimate when it reports none)."""

    raw: str = ""
    tokens_in: int = 0
    tokens_out: int = 0

    @classmethod
    def of(cls, turn: ParsedTurn, *, raw: str, tokens_in: int, tokens_out: int) -> "Completion":
        return cls(**vars(turn), raw=raw, tokens_in=tokens_in, tokens_out=tokens_out)


class Backend(Protocol):
    name: str

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int, on_text: TextSink,
        on_thinking: TextSink | None = None,
    ) -> Completion:
        """Generate the next model turn for the conversation, streaming its visible text to `on_text` and its
        thinking (thinking mode) to `on_thinking`; tool-call markup is never streamed."""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (exact with a real tokenizer, an estimate otherwise)."""

    def describe(self) -> str:
        """One line naming the backend and model, for /model and reports."""


def estimate_tokens(text: str) -> int:
    """Rough count for backends without a local tokenizer: ~4 characters per token for code and English."""
    return (len(text) + 3) // 4
