"""Decode step time and step memory vs context length: paged bf16 / 8-bit / 4-bit pages vs the simple cache.

The model has the Gemma 4 12B attention shapes (16 query heads; sliding layers 8 KV heads x 256, window 1024; full
layers 1 KV head x 512, k_eq_v, proportional RoPE) at reduced depth (default one sliding + one full layer), with a
narrow residual stream, MLP and vocabulary (512 / 512 / 2048: what this measures is attention over the cache;
bf16 matmuls are emulated and slow on the CPU backend), random bf16 weights.
Prefilling 256K tokens through the model would take hours on a CPU, so each cache is filled directly with random
K/V up to each context length, then timed on real decode steps (`model(token, cache)`, rolled back after each
step so the context stays put). Peak memory above the cache itself is measured for a decode step and for a
32-token chunk (a speculative verify / small prefill chunk): with pages it stays flat as the context grows (attention runs chunk by chunk with an
online softmax); the simple cache (one fused attention over the whole context, the peer) needs
queries x context scores for the chunk, so it is measured only up to --simple-max-context.
Medians of --steps steps; ratios are ours / simple cache at the same context.

Reproduce (defaults: a few minutes on 2 CPU cores; the full range takes longer):
    python bench/long_context.py --json
    python bench/long_context.py --contexts 4096 16384 65536 262144 --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten, tree_unflatten  # noqa: E402

from mlx_model.config import TextConfig  # noqa: E402
from mlx_model.gemma4 import Model  # noqa: E402
from mlx_model.paged_cache import PagedKVCache  # noqa: E402

SLIDING, FULL = "sliding_attention", "full_attention"
CHUNK_QUERIES = 32


def build_model(layers: int = 2, hidden: int = 512, intermediate: int = 512, vocab: int = 2048,
                seed: int = 0, dtype=mx.bfloat16, heads: int = 16, sliding_kv_heads: int = 8,
                sliding_head_dim: int = 256, full_head_dim: int = 512) -> Model:
    """Random model, by default with the 12B attention shapes; layer i is full when (i + 1) % 6 == 0 and the last
    layer is full."""
    layer_types = [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(layers - 1)] + [FULL]
    config = TextConfig.from_dict({
        "model_type": "gemma4_unified_text", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": sliding_kv_heads, "head_dim": sliding_head_dim, "global_head_dim": full_head_dim, "num_global_key_value_heads": 1,
        "attention_k_eq_v": True, "sliding_window": 1024, "layer_types": layer_types,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 262144,
        "rope_parameters": {SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
                            FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                   "rope_theta": 1000000.0}},
    })
    model = Model(config)
    rng = np.random.default_rng(seed)
    params = []
    for name, value in tree_flatten(model.parameters()):
        shape = value.shape
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            # Scale 1.0 attention: q.k grows with head_dim, so small norm weights keep the softmax soft.
            new = (0.2 + 0.3 * rng.random(shape)) * (256 / shape[0]) ** 0.5
        elif name.endswith("norm.weight") or name.endswith("layer_scalar"):
            new = 0.5 + rng.random(shape)
        elif name.endswith("embed_tokens.weight"):
            new = rng.standard_normal(shape, dtype=np.float32) * 0.5
        else:
            scale = 0.3 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            new = rng.standard_normal(shape, dtype=np.float32) * (scale * shape[-1] ** -0.5)
        params.append((name, mx.array(new).astype(dtype)))
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())
    return model


def fill(cache, model: Model, upto: int, seed: int) -> None:
    """Append random K/V (RMS-normalized like the model's values) to every layer cache until `upto` tokens."""
    key = mx.random.key(seed)
    while cache.offset < upto:
        n = min(256, upto - cache.offset)
        key, sub = mx.random.split(key)
        for index, layer in enumerate(cache.layers):
            if layer is None:
                continue
            spec = model.config.layers[index]
            shape = (1, spec.num_kv_heads, n, spec.head_dim)
            values = mx.fast.rms_norm(mx.random.normal(shape, key=sub), None, 1e-6).astype(mx.bfloat16)
            keys = None if isinstance(layer, PagedKVCache) and layer.keys_from_values else values
            layer.append(keys, values)
        if cache.offset % 4096 == 0 or cache.offset == upto:
            mx.eval(cache.arrays())


def measure(model: Model, cache, queries: int, steps: int) -> tuple[float, int]:
    """Median seconds of a `queries`-token forward step at the cache's context, and its peak memory above
    what was allocated before the step (the step is rolled back each time)."""
    tokens = mx.array([[7] * queries])
    times, peaks = [], []
    for i in range(steps + 1):
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        start = time.perf_counter()
        mx.eval(model(tokens, cache=cache, num_logits=1))
        elapsed = time.perf_counter() - start
        peaks.append(mx.get_peak_memory() - base)
        if i:  # the first step is a warm-up
            times.append(elapsed)
        cache.trim(queries)
    return statistics.median(times), max(peaks)


def simple_cache(model: Model):
    """The original exact cache (one fused attention over all keys), paged=False."""
    return model.make_cache(rollback_slack=CHUNK_QUERIES, paged=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--kv-bits", type=int, nargs="+", default=[16, 8, 4], choices=[16, 8, 4])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512, help="residual width (3840 in the 12B)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--chunk-max-context", type=int, default=16384,
                        help="measure the 32-token chunk step only up to this context (it is slow on a CPU)")
    parser.add_argument("--simple-max-context", type=int, default=65536,
                        help="run the simple cache only up to this context (its chunk step needs q x context)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = build_model(args.layers, hidden=args.hidden, intermediate=args.hidden)
    limit = model.config.max_position_embeddings
    # Leave room for the step's own tokens inside the model's window (262144 -> 262112).
    contexts = sorted({min(c, limit - CHUNK_QUERIES) for c in args.contexts})
    kinds = [("simple", None)] + [(f"paged-{b}", b) for b in args.kv_bits]
    rows = []
    for name, bits in kinds:
        cache = simple_cache(model) if bits is None else model.make_cache(
            kv_bits=bits, max_context=limit, rollback_slack=CHUNK_QUERIES)
        for context in contexts:
            if bits is None and context > args.simple_max_context:
                break
            fill(cache, model, context, seed=context)
            decode_s, decode_peak = measure(model, cache, 1, args.steps)
            row = {"cache": name, "context": context, "decode_ms": decode_s * 1e3, "decode_peak_bytes": decode_peak,
                   "cache_bytes": cache.nbytes}
            if context <= args.chunk_max_context:
                chunk_s, chunk_peak = measure(model, cache, CHUNK_QUERIES, 1)
                row.update(chunk_ms=chunk_s * 1e3, chunk_peak_bytes=chunk_peak)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del cache
    simple = {r["context"]: r for r in rows if r["cache"] == "simple"}
    mib = 2**20
    print(f"Decode step vs context, 12B attention shapes, {args.layers} layers; x = ours / simple cache")
    print(f"{'cache':>9} {'context':>8} {'cache MiB':>9} {'decode ms':>9} {'x':>6} {'peak MiB':>8} "
          f"{'chunk32 ms':>11} {'x':>6} {'chunk peak MiB':>14}")
    for r in rows:
        peer = simple.get(r["context"], {})
        r["decode_ratio"] = r["decode_ms"] / peer["decode_ms"] if peer else None
        r["chunk_ratio"] = r["chunk_ms"] / peer["chunk_ms"] if peer and "chunk_ms" in r and "chunk_ms" in peer \
            else None
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(f"{r['cache']:>9} {r['context']:>8} {r['cache_bytes'] / mib:>9.0f} {r['decode_ms']:>9.1f} "
              f"{fmt(r['decode_ratio'], '.2f'):>6} {r['decode_peak_bytes'] / mib:>8.1f} "
              f"{fmt(r.get('chunk_ms'), '.0f'):>11} {fmt(r['chunk_ratio'], '.2f'):>6} "
              f"{fmt(r.get('chunk_peak_bytes') and r['chunk_peak_bytes'] / mib, '.0f'):>14}")
    if args.json:
        print(json.dumps({"benchmark": "long_context", "layers": args.layers, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
