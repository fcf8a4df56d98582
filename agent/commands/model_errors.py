"""Loading a model for a command, with one clear message instead of a traceback when it cannot be loaded."""
from __future__ import annotations

import sys

GET_WEIGHTS_HINT = (
    "To get weights: leave --model unset and add --yes (downloads google/gemma-4-12B-it and converts it once), "
    "or pass a directory, a .gguf file, ollama:NAME or a hub repo ORG/NAME; `gemma-agent convert SRC DST --bits 4` "
    "converts a Hugging Face checkpoint you downloaded."
)


def load_or_explain(path: str):
    """`mlx_model.load(path)`, or None after printing what is wrong and how to fix it."""
    import mlx_model

    try:
        return mlx_model.load(path)
    except mlx_model.ModelLoadError as exc:
        report_load_error(exc)
        return None


def report_load_error(exc: Exception) -> None:
    print(f"error: cannot load the model: {exc}\n{GET_WEIGHTS_HINT}", file=sys.stderr)
