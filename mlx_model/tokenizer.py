"""The Gemma tokenizer, read from a model directory's `tokenizer.json` (Hugging Face `tokenizers` format)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as _HFTokenizer

END_OF_TURN = "<turn|>"  # Gemma 4 closes every turn with this control token; generation stops on it.


class Tokenizer:
    """Text <-> token ids. `encode` adds no BOS: callers (the chat format) place it."""

    def __init__(self, backend: _HFTokenizer, bos_id: int | None, eos_ids: set[int]):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_ids = eos_ids

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "Tokenizer | None":
        """The tokenizer of a model directory, or None when it has no tokenizer.json."""
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            return None
        try:
            backend = _HFTokenizer.from_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path} cannot be read as a tokenizer: {exc}") from None
        settings = _read_json(model_dir / "tokenizer_config.json")
        generation = _read_json(model_dir / "generation_config.json")
        model_config = _read_json(model_dir / "config.json")

        def token_id(entry: Any) -> int | None:
            text = entry.get("content") if isinstance(entry, dict) else entry
            return backend.token_to_id(text) if isinstance(text, str) else None

        bos_id = token_id(settings.get("bos_token")) or generation.get("bos_token_id")
        if bos_id is None:
            bos_id = model_config.get("bos_token_id", backend.token_to_id("<bos>"))
        eos_ids = set(_as_ids(generation.get("eos_token_id"))) | set(_as_ids(model_config.get("eos_token_id")))
        for entry in (settings.get("eos_token"), END_OF_TURN):
            found = token_id(entry)
            if found is not None:
                eos_ids.add(found)
        return cls(backend, bos_id, eos_ids)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, text: str) -> int | None:
        return self.backend.token_to_id(text)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)


class StreamingDecoder:
    """Turns a growing list of token ids into text pieces, holding back incomplete UTF-8 sequences.

    Each piece is decoded together with a few already-emitted tokens as context, so decoders that treat the
    first token of a string specially (leading-space stripping) still produce the right spacing.
    """

    CONTEXT = 4

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.context: list[int] = []
        self.pending: list[int] = []

    def add(self, token_id: int) -> str:
        self.pending.append(token_id)
        text = self._decode_pending()
        if text.endswith("\ufffd"):  # a multi-byte character is split across tokens: wait for the rest
            return ""
        self.context = (self.context + self.pending)[-self.CONTEXT:]
        self.pending = []
        return text

    def flush(self) -> str:
        text = self._decode_pending() if self.pending else ""
        self.pending = []
        return text

    def _decode_pending(self) -> str:
        before = self.tokenizer.decode(self.context, self.skip_special_tokens)
        full = self.tokenizer.decode(self.context + self.pending, self.skip_special_tokens)
        return full[len(before):] if full.startswith(before) else full


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
