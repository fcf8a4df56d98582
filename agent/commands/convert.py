"""`gemma-agent convert`: turn a Hugging Face checkpoint into an MLX one, optionally quantized."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agent.commands.model_errors import report_load_error

DTYPES = ("bfloat16", "float16", "float32")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a Hugging Face checkpoint or a Gemma 4 GGUF to MLX (optionally 4/8-bit)",
        description="Read a Gemma 4 checkpoint in Hugging Face layout (config.json + safetensors, the multimodal "
                    "or the text-only names, or any MLX conversion), a Gemma 4 GGUF (or a Gemma 3 text model's), or its MTP drafter "
                    "(gemma4_unified_assistant), and write an MLX checkpoint that `gemma-agent` loads. One tensor "
                    "is read, converted and written at a time (memory follows the largest tensor); the result "
                    "appears only when complete. Vision and audio embedders are dropped. Tokenizer files are copied "
                    "along (from a GGUF: rebuilt from its vocabulary, with its chat template).",
    )
    p.add_argument("src", metavar="SRC", help="source model or drafter: a directory, a Gemma 4 (or Gemma 3) .gguf file, "
                   "ollama:NAME[:TAG] or a hub repo ORG/NAME[@REVISION] (downloaded into the Hugging Face cache)")
    p.add_argument("dst", metavar="DST", help="destination directory (must not exist or be empty)")
    p.add_argument("--bits", type=int, choices=(4, 8), default=None,
                   help="quantize weights to 4 or 8 bits (affine, group size 64); default keeps full precision")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="dtype of unquantized tensors (default: as stored in SRC)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import mlx_model  # before mlx.core: it picks the BLAS MLX binds to
    import mlx.core as mx
    from mlx_model.convert import convert_checkpoint
    from mlx_model.sources import SourceError

    dst = Path(args.dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        print(f"error: {dst} exists and is not an empty directory; choose a new destination", file=sys.stderr)
        return 2
    start = time.perf_counter()
    dtype = getattr(mx, args.dtype) if args.dtype else None
    what = f", quantizing to {args.bits} bits (group size 64)" if args.bits else ""
    print(f"converting {args.src} -> {dst}{what}, one tensor at a time ...", file=sys.stderr)
    try:
        src = local_source(args.src)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tqdm(unit=" tensors", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        try:
            convert_checkpoint(src, dst, bits=args.bits, dtype=dtype, on_tensor=lambda _name: bar.update())
        except mlx_model.ModelLoadError as exc:
            report_load_error(exc)
            return 2
    size = sum(f.stat().st_size for f in dst.iterdir())
    print(f"done in {time.perf_counter() - start:.1f}s: {dst} ({size / 2**30:.2f} GiB)", file=sys.stderr)
    return 0


def local_source(spec: str) -> Path:
    """SRC as a local directory or GGUF file; a hub repo is downloaded first (into the Hugging Face cache)."""
    from mlx_model.sources import HubRequest, fetch, locate, plan

    source = locate(spec)
    if isinstance(source, HubRequest):
        return fetch(plan(source, bits=None), bits=None, convert=False)
    return source.path
