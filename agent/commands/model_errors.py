"""Loading a model for a command, with one clear message instead of a traceback when it cannot be loaded."""
from __future__ import annotations

import sys

GET_WEIGHTS_HINT = (
    "To get weights: download google/gemma-4-12B-it on a machine with network access "
    "(`hf download google/gemma-4-12B-it --local-dir DOWNLOADED_DIR`; huggingface_hub 2.x ships `hf`), "
    "then `gemma-agent convert DOWNLOADED_DIR ~/models/gemma-4-12b-4bit --bits 4` and pass that directory "
    "with --model."
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
