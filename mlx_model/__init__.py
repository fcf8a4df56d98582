"""Our MLX port of Gemma 4 12B (`gemma4_unified`): config, decoder, loader/quantizer, tokenizer, generation.
Gemma 3 text models (`gemma3_text`, `gemma3`; `gemma3.py`) run through the same caches and generation, also
straight from a llama.cpp GGUF (`load_gguf`).

    model, tokenizer = mlx_model.load("path/to/model")
    result = mlx_model.generate(model, tokenizer.encode("def add(a, b):"), max_tokens=32)
"""
from __future__ import annotations

from pathlib import Path

from mlx_model.blas import load_fast_blas

load_fast_blas()  # before mlx.core loads: see mlx_model/blas.py

import mlx.core as mx  # noqa: E402

from mlx_model.cache import ModelCache  # noqa: E402
from mlx_model.config import ConfigError, TextConfig, load_config  # noqa: E402
from mlx_model.gemma4 import Model  # noqa: E402
from mlx_model.generate import GenerationResult, generate, make_cache, stream_generate  # noqa: E402
from mlx_model.convert import convert_checkpoint  # noqa: E402
from mlx_model.loader import (ModelLoadError, load_drafter, load_gguf, load_model, quantize_model,  # noqa: E402
                              save_model)
from mlx_model.prefix_cache import PromptCache  # noqa: E402
from mlx_model.tokenizer import StreamingDecoder, Tokenizer  # noqa: E402


def load(path: str | Path, *, dtype: mx.Dtype | None = None) -> tuple[Model, Tokenizer | None]:
    """Load a model directory or a Gemma 4 GGUF file; the tokenizer is None when a directory has no tokenizer
    files."""
    if Path(path).expanduser().is_file():
        from mlx_model import gemma4_gguf

        model, _, tokenizer = gemma4_gguf.load(Path(path).expanduser(), dtype=dtype)
        return model, tokenizer
    model, _ = load_model(path, dtype=dtype)
    try:
        tokenizer = Tokenizer.from_dir(path)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    return model, tokenizer


__all__ = [
    "ConfigError", "GenerationResult", "Model", "ModelCache", "ModelLoadError", "PromptCache", "StreamingDecoder",
    "TextConfig", "Tokenizer", "convert_checkpoint", "generate", "load", "load_config", "load_drafter", "load_gguf",
    "load_model",
    "make_cache",
    "quantize_model", "save_model",
    "stream_generate",
]
