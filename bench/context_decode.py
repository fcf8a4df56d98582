"""Decode tokens/s at long contexts: ours (bf16, 8-bit and 4-bit KV pages) vs mlx-lm 0.32.2, same weights.

The model has the 12B widths at a configurable depth (layer i full when (i + 1) % 6 == 0, the last layer full;
default 8 layers: 6 sliding + 2 full), random bf16 weights written once as a Hugging Face checkpoint, loaded and
quantized the same way by both (affine 4-bit, group 64: bench/decode.py). Each implementation and KV setting
runs in its own process; for every context it prefills a fresh cache with the same random prompt through its
own generation loop (ours: `mlx_model.stream_generate`; mlx-lm: `generate_step`), then decodes --tokens greedy
tokens. Reported: decode tokens/s (after the first token), the ratio ours / mlx-lm, and whether the greedy
tokens agree with mlx-lm's (both bf16 KV). mlx-lm cannot quantize Gemma 4's KV (sliding caches refuse), so it
runs with its default caches: full layers keep every token's K and V in bf16 (k_eq_v layers store the same
tensor twice), a 128K context costs it 2 x 128K x 512 x 2 B = 256 MiB per full layer. A run that fails or runs
out of memory is reported as such, not retried.

Reproduce:
    .venv/bin/pip install --no-deps mlx-lm==0.32.2      # the peer (bench/device.sh installs it on a GPU machine)
    .venv/bin/python bench/context_decode.py --json      # defaults: 1K / 32K / 128K, 8 layers (for a GPU)
    .venv/bin/python bench/context_decode.py --tiny --contexts 64 256 --json   # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decode import build_checkpoint, quantize, text_config  # noqa: E402

KV_SETTINGS = ("bf16", "8", "4")


def worker(impl: str, kv: str, model_dir: Path, contexts: list[int], tokens: int, repeats: int) -> None:
    """In a fresh process: load, quantize the weights to 4 bits, then per context: prefill, decode, time (one
    JSON line per context on stdout)."""
    import mlx_model  # before mlx.core: the same BLAS for both implementations (mlx_model/blas.py)
    import mlx.core as mx

    vocab = json.loads((model_dir / "config.json").read_text())["text_config"]["vocab_size"]
    prompt = mx.random.randint(3, vocab, (max(contexts),), key=mx.random.key(1))
    if impl == "ours":
        model, _ = mlx_model.load(model_dir)
        kv_bits = None if kv == "bf16" else int(kv)

        def run(ids):
            cache = mlx_model.make_cache(model, kv_bits=kv_bits)
            return mlx_model.stream_generate(model, ids, max_tokens=tokens, cache=cache)
    else:
        from mlx_lm.generate import generate_step
        from mlx_lm.utils import load_model

        model, _ = load_model(model_dir)

        def run(ids):
            return (int(t) for t, _ in generate_step(ids, model, max_tokens=tokens))
    quantize(model, 4)
    mx.eval(model.parameters())
    list(run(prompt[:16]))  # warm-up
    for context in contexts:
        rates, out = [], []
        for _ in range(repeats):
            mx.clear_cache()
            start, first = time.perf_counter(), None
            out = []
            for token in run(prompt[:context]):
                first = first or time.perf_counter()
                out.append(token)
            end = time.perf_counter()
            rates.append((len(out) - 1) / (end - first))
        row = {"context": context, "decode_tps": statistics.median(rates), "prefill_seconds": first - start,
               "tokens": out, "peak_memory_gib": mx.get_peak_memory() / 2**30}
        print(json.dumps(row), flush=True)  # one line per context: a worker cut off by --timeout keeps its rows
        print(f"{impl} kv={kv} context {context}: {row['decode_tps']:.2f} tok/s", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768, 131072])
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens decoded per context")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--kv", nargs="+", default=list(KV_SETTINGS), choices=KV_SETTINGS, help="our KV pages")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (bench/mtp_curve.py's), a smoke run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per worker process")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "context_decode")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "KV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = args.workdir / f"{'tiny' if args.tiny else '12b-width'}-{args.layers}L"
    if args.worker:
        worker(*args.worker, model_dir, args.contexts, args.tokens, args.repeats)
        return
    if args.tokens < 2 or args.layers < 2:
        sys.exit("need --tokens >= 2 and --layers >= 2")
    if not (model_dir / "model.safetensors").is_file():
        from bench.mtp_curve import TINY

        print(f"building a random checkpoint in {model_dir} ...", file=sys.stderr)
        # Explicit zeros: mlx-lm's defaults (20 KV-shared layers, per-layer inputs) are those of other Gemma 4s.
        text = dict(text_config(args.layers), **(TINY if args.tiny else {}), num_kv_shared_layers=0,
                    hidden_size_per_layer_input=0)
        build_checkpoint(model_dir, args.layers, seed=0, text=text)
    runs = [("ours", kv) for kv in args.kv] + [("mlx-lm", "bf16")]
    results = {}
    for impl, kv in runs:
        cmd = [sys.executable, __file__, "--worker", impl, kv, "--layers", str(args.layers), "--tokens",
               str(args.tokens), "--repeats", str(args.repeats), "--workdir", str(args.workdir), "--contexts",
               *map(str, args.contexts)] + (["--tiny"] if args.tiny else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            stdout = proc.stdout
            failed = proc.returncode != 0 and (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            failed = f"timed out after {args.timeout:.0f} s"
        name = f"{impl} kv={kv}"
        rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        results[name] = {str(row.pop("context")): row for row in rows}
        if failed:
            results[name]["error"] = failed
        print(f"{name}: {failed or 'done'}", file=sys.stderr, flush=True)
    peer = results.get("mlx-lm kv=bf16", {})
    summary = {"shape": f"{'tiny widths' if args.tiny else '12B widths'}, {args.layers} layers, 4-bit weights",
               "tokens": args.tokens, "results": results, "ratio_vs_mlx_lm": {}, "same_tokens_as_mlx_lm": {}}
    print(f"\n{summary['shape']}: decode tok/s after prefilling each context (ratio = ours / mlx-lm)")
    print(f"{'':16}" + "".join(f"{c:>16}" for c in args.contexts))
    for name, res in results.items():
        cells = []
        for c in map(str, args.contexts):
            if c not in res:
                cells.append("failed")
                continue
            cell = f"{res[c]['decode_tps']:.2f}"
            if name != "mlx-lm kv=bf16" and c in peer:
                ratio = res[c]["decode_tps"] / peer[c]["decode_tps"]
                summary["ratio_vs_mlx_lm"][f"{name} @{c}"] = ratio
                cell += f" ({ratio:.2f}x)"
                if name == "ours kv=bf16":
                    summary["same_tokens_as_mlx_lm"][c] = res[c]["tokens"] == peer[c]["tokens"]
            cells.append(cell)
        print(f"{name:16}" + "".join(f"{cell:>16}" for cell in cells))
    for name, res in results.items():
        if "error" in res:
            print(f"{name} failed: {res['error']}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
