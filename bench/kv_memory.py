"""Memory of the KV cache at long context with the real Gemma 4 12B attention shapes, per page format.

Builds the cache `make_cache` gives the 12B (8 full-attention layers: 1 KV head x 512, k_eq_v so only V is
stored; 40 sliding layers: 8 KV heads x 256, window 1024, as a ring of window - 1 + 256 slots) and fills it with
`--context` tokens of random bf16 K/V, in 4096-token chunks as a chunked prefill would. Each `--kv-bits` runs in
its own process so that its peak RSS is its own. Reports the bytes held by the cache's arrays (full / sliding)
and the process's peak RSS, with ratios to the first format given (bf16 by default), as a table and JSON.

Reproduce (about a minute per format on 2 CPU cores):
    python bench/kv_memory.py --context 262144 --kv-bits 16 8 4 --json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL_LAYERS, SLIDING_LAYERS = 8, 40
FULL_HEAD_DIM, SLIDING_HEADS, SLIDING_HEAD_DIM, WINDOW = 512, 8, 256, 1024
CHUNK = 4096


def worker(context: int, kv_bits: int) -> dict:
    """Runs in a fresh process: build and fill the cache, report its bytes and the peak RSS."""
    import mlx.core as mx

    sys.path.insert(0, str(ROOT))
    from mlx_model.config import RopeSpec
    from mlx_model.gemma4 import Rope
    from mlx_model.paged_cache import PagedKVCache
    from mlx_model.ring_cache import RingKVCache

    rope = Rope(RopeSpec("proportional", 1_000_000.0, 0.25), FULL_HEAD_DIM)
    k_norm = mx.ones((FULL_HEAD_DIM,), mx.bfloat16)

    def keys_from_values(values, offset):  # what Attention.keys_from_values computes
        return rope(values * k_norm, offset)

    bits = None if kv_bits == 16 else kv_bits
    full = [PagedKVCache(kv_bits=bits, max_context=context, keys_from_values=keys_from_values)
            for _ in range(FULL_LAYERS)]
    sliding = [RingKVCache(WINDOW, max_context=context) for _ in range(SLIDING_LAYERS)]
    # Sliding layers see the same stream in 256-token steps (the ring's slack); one random block is reused for
    # them since their size does not depend on the values.
    ring_block = mx.random.normal((1, SLIDING_HEADS, 256, SLIDING_HEAD_DIM)).astype(mx.bfloat16)
    start = time.perf_counter()
    for lo in range(0, context, CHUNK):
        n = min(CHUNK, context - lo)
        for layer in full:
            values = mx.random.normal((1, 1, n, FULL_HEAD_DIM)).astype(mx.bfloat16)
            layer.append(None, values)
        for sub in range(0, n, 256):
            for layer in sliding:
                block = ring_block[..., : min(256, n - sub), :]
                layer.append(block, block)
        mx.eval([a for layer in full + sliding for a in layer.arrays()])
    for layer in full:
        layer.seal()
    mx.eval([a for layer in full for a in layer.arrays()])
    fill_seconds = time.perf_counter() - start
    assert all(layer.offset == context for layer in full + sliding)
    full_bytes = sum(layer.nbytes for layer in full)
    sliding_bytes = sum(layer.nbytes for layer in sliding)
    return {"kv_bits": kv_bits, "context": context, "full_bytes": full_bytes, "sliding_bytes": sliding_bytes,
            "total_bytes": full_bytes + sliding_bytes, "fill_seconds": fill_seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context", type=int, default=65536, help="tokens in the cache (262144 = full window)")
    parser.add_argument("--kv-bits", type=int, nargs="+", default=[16, 8, 4], choices=[16, 8, 4])
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.context, args.kv_bits[0])))
        return
    rows = []
    for bits in args.kv_bits:
        out = subprocess.run([sys.executable, __file__, "--worker", "--context", str(args.context),
                              "--kv-bits", str(bits)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    gib = 2**30
    print(f"KV cache at {args.context} tokens, Gemma 4 12B attention shapes ({FULL_LAYERS} full + "
          f"{SLIDING_LAYERS} sliding layers); ratios vs kv_bits={base['kv_bits']}")
    print(f"{'kv_bits':>7} {'full GiB':>9} {'sliding GiB':>11} {'total GiB':>9} {'x total':>8} "
          f"{'peak RSS GiB':>12} {'x RSS':>6} {'fill s':>7}")
    for r in rows:
        r["total_ratio"] = r["total_bytes"] / base["total_bytes"]
        r["rss_ratio"] = r["peak_rss_bytes"] / base["peak_rss_bytes"]
        print(f"{r['kv_bits']:>7} {r['full_bytes'] / gib:>9.3f} {r['sliding_bytes'] / gib:>11.3f} "
              f"{r['total_bytes'] / gib:>9.3f} {r['total_ratio']:>8.3f} {r['peak_rss_bytes'] / gib:>12.3f} "
              f"{r['rss_ratio']:>6.3f} {r['fill_seconds']:>7.1f}")
    if args.json:
        print(json.dumps({"benchmark": "kv_memory", "context": args.context, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
