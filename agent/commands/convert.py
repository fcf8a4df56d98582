"""`gemma-agent convert`: turn a Hugging Face checkpoint into an MLX one, optionally quantized."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent.commands.model_errors import report_load_error

DTYPES = ("bfloat16", "float16", "float32")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a Hugging Face checkpoint to MLX (optionally 4/8-bit)",
        description="Read a Gemma 4 checkpoint in Hugging Face layout (config.json + safetensors, the multimodal "
                    "or the text-only names), or its MTP drafter (gemma4_unified_assistant), and write an MLX checkpoint "
                    "that `gemma-agent` loads. Vision and "
                    "audio embedders are dropped. Tokenizer files are copied along. SRC may also be a llama.cpp "
                    "GGUF file of a Gemma 3 text model (tensors dequantized to float; tokenizer rebuilt).",
    )
    p.add_argument("src", metavar="SRC", help="source model or drafter directory, or a .gguf file")
    p.add_argument("dst", metavar="DST", help="destination directory (must not exist or be empty)")
    p.add_argument("--bits", type=int, choices=(4, 8), default=None,
                   help="quantize weights to 4 or 8 bits (affine, group size 64); default keeps full precision")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="dtype of unquantized tensors (default: as stored in SRC)")
    p.set_defaults(func=run)


def _model_type(src: str) -> str | None:
    try:
        return json.loads((Path(src) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # the loader reports what is wrong with the directory


def run(args: argparse.Namespace) -> int:
    import mlx.core as mx

    import mlx_model

    dst = Path(args.dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        print(f"error: {dst} exists and is not an empty directory; choose a new destination", file=sys.stderr)
        return 2
    start = time.perf_counter()
    print(f"loading {args.src} ...", file=sys.stderr)
    dtype = getattr(mx, args.dtype) if args.dtype else None
    source_dir = args.src
    try:
        if Path(args.src).is_file() and args.src.endswith(".gguf"):  # a llama.cpp GGUF (Gemma 3 text models)
            model, raw_config, gguf = mlx_model.load_gguf(args.src, dtype=dtype)
            source_dir = tempfile.mkdtemp(prefix="gemma-agent-tokenizer-")
            gguf.save_tokenizer(source_dir)
        elif _model_type(args.src) == "gemma4_unified_assistant":  # an MTP drafter
            model = mlx_model.load_drafter(args.src, dtype=dtype)
            raw_config = json.loads((Path(args.src) / "config.json").read_text())
        else:
            model, raw_config = mlx_model.load_model(args.src, dtype=dtype)
    except mlx_model.ModelLoadError as exc:
        report_load_error(exc)
        return 2
    if args.bits:
        print(f"quantizing to {args.bits} bits (group size 64) ...", file=sys.stderr)
        mlx_model.quantize_model(model, args.bits)
    print(f"writing {dst} ...", file=sys.stderr)
    try:
        mlx_model.save_model(model, raw_config, dst, bits=args.bits, source_dir=source_dir)
    finally:
        if source_dir != args.src:
            shutil.rmtree(source_dir, ignore_errors=True)
    size = sum(f.stat().st_size for f in dst.iterdir())
    print(f"done in {time.perf_counter() - start:.1f}s: {dst} ({size / 2**30:.2f} GiB)", file=sys.stderr)
    return 0
