"""Read GGUF files (llama.cpp's format): metadata, tensors dequantized to float32, tokenizer and chat template.

Nothing here is specific to one architecture; model files map names and config keys (see `gemma3.from_gguf`).

    f = GGUFFile("model.gguf")
    f.architecture                      # "gemma3", "gemma4", ...
    f.arch_get("embedding_length")      # metadata key "<architecture>.embedding_length"
    f.get("tokenizer.ggml.bos_token_id")
    f.tensor_names                      # llama.cpp names: "token_embd.weight", "blk.0.attn_q.weight", ...
    f.tensor("blk.0.attn_q.weight")     # float32 numpy array in PyTorch layout ([out, in] for a matmul weight)
    f.tokenizer()                       # a `tokenizers.Tokenizer` whose ids match transformers on this file
    f.special_token_ids                 # {"bos": 2, "eos": 1, "unk": 3, "pad": 0} (those present)
    f.chat_template                     # `tokenizer.chat_template`, or None
    unshift_norm(w)                     # llama.cpp stores Gemma RMSNorm weights as 1 + w: gives w back

Quantized tensors (Q4_K, Q5_0, Q6_K, Q8_0, ...) go through the `gguf` package's `gguf.quants.dequantize`.
Tokenizers: SentencePiece-style BPE vocabularies (`tokenizer.ggml.model` "llama" or "gemma4": pieces spelled
with "▁" for spaces, `<0xNN>` byte-fallback tokens); merges are read from the file or, when it has none,
rebuilt from the vocabulary.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# llama.cpp's token types (gguf.TokenType): 3 = CONTROL (special, matched whole), 4 = USER_DEFINED (an added
# token matched whole, not special).
_CONTROL, _USER_DEFINED = 3, 4
_SPM_TOKENIZERS = ("llama", "gemma4")
# Architectures whose SentencePiece vocabulary lists tokens in merge order (their scores do not follow it).
# Fact from transformers' GGUF tokenizer mapping (`gemma_tokenizer`), which we match id for id.
_MERGE_ORDER_IS_TOKEN_ORDER = ("gemma", "gemma2", "gemma3")


class GGUFError(ValueError):
    """A file that is not a readable GGUF, or one holding something this reader does not support."""


def unshift_norm(weight: np.ndarray) -> np.ndarray:
    """llama.cpp's converter stores Gemma RMSNorm weights as 1 + w (Gemma scales by 1 + w); return w."""
    return weight - np.float32(1.0)


class GGUFFile:
    """One GGUF file, read lazily (tensors are memory-mapped and dequantized on request)."""

    def __init__(self, path: str | Path):
        import gguf

        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFError(f"{self.path} is not a file")
        try:
            self._reader = gguf.GGUFReader(self.path)
        except Exception as exc:  # the gguf package raises ValueError / struct errors / IndexError on bad files
            raise GGUFError(f"{self.path} is not a readable GGUF file: {exc}") from None
        self._tensors = {t.name: t for t in self._reader.tensors}

    # -- metadata -------------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value (str, number, bool or list), or `default` when the key is absent."""
        field = self._reader.fields.get(key)
        if field is None:
            return default
        value = field.contents()
        return value.tolist() if isinstance(value, np.ndarray) else value

    def arch_get(self, key: str, default: Any = None) -> Any:
        """The architecture-scoped value `<general.architecture>.<key>`."""
        return self.get(f"{self.architecture}.{key}", default)

    @property
    def keys(self) -> list[str]:
        return list(self._reader.fields)

    @cached_property
    def architecture(self) -> str:
        arch = self.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{self.path} has no general.architecture entry")
        return arch

    @property
    def chat_template(self) -> str | None:
        return self.get("tokenizer.chat_template")

    @cached_property
    def special_token_ids(self) -> dict[str, int]:
        ids = {}
        for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                          ("pad", "padding_token_id")):
            value = self.get(f"tokenizer.ggml.{key}")
            if value is not None:
                ids[name] = int(value)
        return ids

    # -- tensors --------------------------------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor_type(self, name: str) -> str:
        """The stored type's name ("F32", "Q4_K", ...)."""
        return self._info(name).tensor_type.name

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """The shape in PyTorch/numpy order (GGUF lists dimensions innermost first)."""
        return tuple(int(d) for d in reversed(self._info(name).shape))

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to float32, shaped like the original checkpoint's tensor."""
        from gguf.quants import dequantize

        info = self._info(name)
        try:
            data = dequantize(info.data, info.tensor_type)
        except NotImplementedError:
            raise GGUFError(f"{self.path}: tensor {name!r} has type {info.tensor_type.name}, which the gguf "
                            "package cannot dequantize") from None
        return np.asarray(data, dtype=np.float32).reshape(self.tensor_shape(name))

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self._tensors:
            yield name, self.tensor(name)

    def _info(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path} has no tensor {name!r}") from None

    # -- tokenizer ------------------------------------------------------------------------------------------
    def tokenizer(self):
        """The tokenizer the file describes, as a `tokenizers.Tokenizer` (BPE with byte fallback; spaces become
        "▁" before matching; control tokens are special added tokens, user-defined ones plain added tokens)."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

        kind = self.get("tokenizer.ggml.model")
        if kind not in _SPM_TOKENIZERS:
            raise GGUFError(f"{self.path}: tokenizer model {kind!r} is not supported (supported: "
                            f"{', '.join(_SPM_TOKENIZERS)}, SentencePiece-style vocabularies)")
        stored = self.get("tokenizer.ggml.tokens")
        types = self.get("tokenizer.ggml.token_type") or [1] * len(stored)
        # Pieces made only of spaces are stored with real spaces; the model matches them spelled with "▁".
        tokens = ["\u2581" * len(t) if t and not t.strip(" ") else t for t in stored]
        vocab = {token: index for index, token in enumerate(tokens)}
        merges = self.get("tokenizer.ggml.merges")
        if merges is not None:
            merges = [tuple(m.split(" ", 1)) for m in merges]
        elif self.architecture in _MERGE_ORDER_IS_TOKEN_ORDER:
            merges = _merges_from_vocab(vocab, {t: -i for t, i in vocab.items()})
        else:
            scores = self.get("tokenizer.ggml.scores")
            merges = _merges_from_vocab(vocab, dict(zip(tokens, scores)))
        unk = self.special_token_ids.get("unk")
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None if unk is None else tokens[unk],
                                   fuse_unk=True, byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, kind in zip(stored, types) if kind == _CONTROL])
        # User-defined pieces are matched whole, except the respelled space runs (BPE merges build those).
        tok.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, kind in zip(stored, types) if kind == _USER_DEFINED and t in vocab])
        return tok


def _merges_from_vocab(vocab: dict[str, int], priority: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a vocabulary: every split of a token into two tokens, the merges making a token of
    higher `priority` first, then longer left pieces, then longer right pieces (transformers' order)."""
    ranked = []
    for token, index in vocab.items():
        for cut in range(len(token) - 1, 0, -1):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-priority[token], -cut, cut - len(token), left, right))
    ranked.sort(key=lambda m: m[:3])
    return [(left, right) for *_, left, right in ranked]
