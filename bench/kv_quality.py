"""Quality of 8-bit and 4-bit KV pages vs bf16 pages: attention-output error and next-token logit KL.

1. Attention output, Gemma 4 12B full-attention shapes (16 query heads, 1 KV head x 512, k_eq_v: only V is
   stored and K = RoPE(v * k_norm.weight) is rebuilt, proportional RoPE theta 1e6 over 25% of the dims), at
   contexts up to 32K, on two kinds of synthetic data: "gaussian" (RMS-normalized Gaussian V, smooth k_norm
   weight) and "outliers" (Student-t V with 8 channels x6 and k_norm.weight with 4 channels x4: errors in V are
   amplified in K and the softmax gets very peaked, the hard case REFERENCE.md warns about). 16 decode queries at the end of the context; relative L2 error of each head's output.
2. Logits of a small random Gemma 4 (6 layers: 5 sliding + 1 full; the 12B head dims and window; 4 query heads
   and a narrow residual stream so CPU prefills finish), bf16: prefill a context, then 32 teacher-forced decode
   steps; KL(bf16 || quantized) of the next-token distributions and top-1 agreement.

No trained 12B weights are available offline here, so both parts use synthetic data: read the numbers as the
error the page format adds, not as a perplexity. Medians and maxima over queries/steps; one run.

Reproduce:
    python bench/kv_quality.py --json
    python bench/kv_quality.py --contexts 1024 4096 16384 32768 --logit-contexts 512 2048 8192 --json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402

from long_context import build_model  # noqa: E402

from mlx_model.config import RopeSpec  # noqa: E402
from mlx_model.gemma4 import Rope  # noqa: E402
from mlx_model.generate import prefill  # noqa: E402
from mlx_model.paged_cache import PagedKVCache  # noqa: E402

HEAD_DIM, HEADS, QUERIES = 512, 16, 16


def synthetic_layer(context: int, seed: int, outliers: bool):
    """Values [1, 1, context, 512] (bf16), k_norm weight, and queries [1, 16, QUERIES, 512]. Without
    `outliers`: Gaussian values and smooth weights; with: Student-t values, outlier channels in both."""
    rng = np.random.default_rng(seed)
    channel = np.exp(rng.normal(0, 0.5, HEAD_DIM))
    k_weight = np.exp(rng.normal(np.log(0.35), 0.3, HEAD_DIM))
    if outliers:
        channel[rng.choice(HEAD_DIM, 8, replace=False)] *= 6
        k_weight[rng.choice(HEAD_DIM, 4, replace=False)] *= 4
        raw = rng.standard_t(3, size=(context, HEAD_DIM)) * channel
    else:
        raw = rng.standard_normal((context, HEAD_DIM)) * channel
    values = raw / np.sqrt((raw**2).mean(-1, keepdims=True) + 1e-6)
    q = rng.standard_normal((HEADS, QUERIES, HEAD_DIM))
    q = q / np.sqrt((q**2).mean(-1, keepdims=True)) * 0.45
    return (mx.array(values[None, None].astype(np.float32)).astype(mx.bfloat16),
            mx.array(k_weight.astype(np.float32)).astype(mx.bfloat16),
            mx.array(q[None].astype(np.float32)).astype(mx.bfloat16))


def attention_errors(contexts: list[int], bits_list: list[int]) -> list[dict]:
    rope = Rope(RopeSpec("proportional", 1_000_000.0, 0.25), HEAD_DIM)
    rows = []
    for context, outliers in [(c, o) for c in contexts for o in (False, True)]:
        values, k_weight, queries = synthetic_layer(context, seed=context, outliers=outliers)
        outputs = {}
        for bits in [16] + bits_list:
            cache = PagedKVCache(kv_bits=bits, keys_from_values=lambda v, o: rope(v * k_weight, o))
            for lo in range(0, context, cache.page_size):  # page by page, as a prefill fills it
                cache.append(None, values[..., lo : lo + cache.page_size, :])
                if lo % 4096 == 0:
                    mx.eval(cache.arrays())
            assert cache.tail_length == cache.page_size  # all but the newest page quantized
            out = cache.attend(queries, context - QUERIES).astype(mx.float32)
            outputs[bits] = np.array(out)[0]  # [heads, queries, dim]
        base = outputs[16]
        for bits in bits_list:
            err = np.linalg.norm(outputs[bits] - base, axis=-1) / np.linalg.norm(base, axis=-1)
            rows.append({"context": context, "data": "outliers" if outliers else "gaussian", "kv_bits": bits,
                         "rel_err_median": float(np.median(err)),
                         "rel_err_max": float(err.max())})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def logit_kl(contexts: list[int], bits_list: list[int], steps: int) -> list[dict]:
    model = build_model(6, hidden=256, intermediate=512, vocab=4096, heads=4, sliding_kv_heads=4)
    rows = []
    for context in contexts:
        ids = mx.random.randint(3, 4096, (1, context + steps), key=mx.random.key(context))
        logits = {}
        for bits in [16] + bits_list:
            cache = mlx_model.make_cache(model, kv_bits=bits)
            first = prefill(model, ids[:, :context], cache)
            outs = [np.array(first.astype(mx.float32))]
            for t in range(context, context + steps - 1):
                outs.append(np.array(model(ids[:, t : t + 1], cache=cache)[:, -1].astype(mx.float32)))
            logits[bits] = np.concatenate(outs, 0)
        p = log_softmax(logits[16])
        for bits in bits_list:
            q = log_softmax(logits[bits])
            kl = (np.exp(p) * (p - q)).sum(-1)
            rows.append({"context": context, "kv_bits": bits, "kl_median": float(np.median(kl)),
                         "kl_max": float(kl.max()), "top1_agree": float((p.argmax(-1) == q.argmax(-1)).mean())})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    parser.add_argument("--logit-contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--kv-bits", type=int, nargs="+", default=[8, 4], choices=[8, 4])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    attention = attention_errors(args.contexts, args.kv_bits)
    logits = logit_kl(args.logit_contexts, args.kv_bits, args.steps)
    print("Attention output vs bf16 pages (12B full-layer shapes, synthetic K/V): relative L2 error")
    print(f"{'context':>8} {'data':>9} {'kv_bits':>7} {'median':>9} {'max':>9}")
    for r in attention:
        print(f"{r['context']:>8} {r['data']:>9} {r['kv_bits']:>7} {r['rel_err_median']:>9.4f} "
              f"{r['rel_err_max']:>9.4f}")
    print(f"Next-token logits vs bf16 pages (random 6-layer model, {args.steps} decode steps)")
    print(f"{'context':>8} {'kv_bits':>7} {'KL median':>10} {'KL max':>10} {'top-1':>6}")
    for r in logits:
        print(f"{r['context']:>8} {r['kv_bits']:>7} {r['kl_median']:>10.2e} {r['kl_max']:>10.2e} "
              f"{r['top1_agree']:>6.3f}")
    if args.json:
        print(json.dumps({"benchmark": "kv_quality", "attention": attention, "logits": logits}, indent=2))


if __name__ == "__main__":
    main()
