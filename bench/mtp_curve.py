"""Speculative decoding at the real 12B shape: the speedup-vs-acceptance curve, plain vs fixed k vs adaptive.

Acceptance depends on real weights we do not have; speed depends on the shapes and the machine. This bench
separates the two. The target has the 12B widths (hidden 3840, MLP 15360, vocab 262144, 16 heads, sliding
layers 8 KV heads x 256, full layers 1 KV head x 512 with k_eq_v; layer i full when (i + 1) % 6 == 0, the last
layer full) at a configurable depth (48 = the real model), the drafter the reported assistant shape (4 layers
[S, S, S, F], hidden 1024, centroid head: 2048 centroids, top 32); both have random 4-bit weights (affine,
group 64). The context is filled with random K/V (prefilling 16K tokens through a 12B-wide model takes hours
on a CPU); decoding then runs the real code path, `mlx_model.stream_generate`, from that cache.

`AcceptanceOracle` is a BENCHMARK DOUBLE, not a drafter, and lives only here: it runs the real drafter
network at full cost, then discards its choice and proposes the target's greedy token (known from a plain run
first) with probability alpha, a random other token otherwise. Rounds therefore cost what real rounds cost
while the acceptance rate is set. The output is still the target's own: every run is checked token for token
against plain decoding (a mismatch aborts the bench).

Reported per context length: plain decode tokens/s, the drafter step's cost as a fraction of a plain target
step, and for each alpha the speedup (median over --repeats of plain's time / the config's time, paired: all
configs of one alpha run back to back in a rotating order, with a plain run in the same group) of fixed
k = 1..6 and of the adaptive policy, with the measured acceptance. Decode time only (from the first generated
token on; the one-token prefill is the same for every config).

Reproduce (shared 2-core CPU, reduced depth: ~30 minutes):
    .venv/bin/python bench/mtp_curve.py --layers 2 --contexts 1024 16384 --tokens 24 --repeats 3 --json
On a GPU machine (bench/device.sh runs it): .venv/bin/python bench/mtp_curve.py --json
Quick smoke run with tiny widths (what tests/test_mtp_curve.py runs): --tiny --layers 2 --contexts 64 ...
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten, tree_unflatten  # noqa: E402

from bench.decode import text_config  # noqa: E402
from bench.long_context import fill  # noqa: E402
from mlx_model.assistant import AssistantConfig, Drafter  # noqa: E402
from mlx_model.config import TextConfig  # noqa: E402
from mlx_model.gemma4 import Model  # noqa: E402
from mlx_model.speculative import MAX_DRAFT, SpeculativeStats  # noqa: E402

ALPHAS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
# Tiny widths for smoke runs and tests: every code path of the real shape, none of its cost.
TINY = dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
            head_dim=64, global_head_dim=128)
TINY_DRAFTER = dict(hidden_size=64, intermediate_size=128, num_centroids=64, top_k=4)


def shapes(layers: int, tiny: bool) -> tuple[dict, dict]:
    """(target text config, drafter config) as config.json dicts."""
    target = dict(text_config(layers), **(TINY if tiny else {}))
    small = TINY_DRAFTER if tiny else dict(hidden_size=1024, intermediate_size=4096, num_centroids=2048, top_k=32)
    drafter = {"model_type": "gemma4_unified_assistant", "backbone_hidden_size": target["hidden_size"],
               "use_ordered_embeddings": True, "num_centroids": small["num_centroids"],
               "centroid_intermediate_top_k": small["top_k"],
               "text_config": dict(target, hidden_size=small["hidden_size"],
                                   intermediate_size=small["intermediate_size"], num_hidden_layers=4,
                                   layer_types=["sliding_attention"] * 3 + ["full_attention"])}
    return target, drafter


def randomize_quantized(module, bits: int, seed: int) -> None:
    """Quantize `module` (lazily) and overwrite every array with random values of the quantized layout, so the
    float weights are never materialized (a 262144 x 3840 embedding would take 4 GiB in float32)."""
    mlx_model.quantize_model(module, bits)
    key = mx.random.key(seed)
    levels = 2 ** bits - 1
    step = 0.05 / levels  # dequantized weights uniform in about [-0.025, 0.025]
    params = []
    for name, value in tree_flatten(module.parameters()):
        key, sub = mx.random.split(key)
        if value.dtype == mx.uint32:  # packed quantized weights
            high, low = (mx.random.randint(0, 1 << 16, value.shape, key=k).astype(mx.uint32)
                         for k in mx.random.split(sub))
            new = (high << 16) | low
        elif name.endswith(".scales"):
            new = mx.full(value.shape, step, dtype=mx.bfloat16)
        elif name.endswith(".biases"):
            new = mx.full(value.shape, -step * levels / 2, dtype=mx.bfloat16)
        elif name.endswith("token_ordering"):
            new = mx.random.permutation(value.shape[0], key=sub).astype(mx.int32)
        else:  # norms, layer scalars
            new = mx.ones(value.shape, dtype=mx.bfloat16)
        mx.eval(new)
        params.append((name, new))
    module.update(tree_unflatten(params))


def build_pair(layers: int, tiny: bool, bits: int = 4, seed: int = 0) -> tuple[Model, Drafter]:
    target_raw, drafter_raw = shapes(layers, tiny)
    target = Model(TextConfig.from_dict(target_raw))
    randomize_quantized(target, bits, seed)
    drafter = Drafter(AssistantConfig.from_dict(drafter_raw))
    randomize_quantized(drafter, bits, seed + 1)
    return target, drafter


class AcceptanceOracle:
    """BENCHMARK DOUBLE (bench/ only; the library never sees it): a drafter whose acceptance rate is set.

    Runs the real drafter at full cost, then proposes, for the token at position p + 1 + i of round i's
    draft, the target's greedy token (`reference[position]`, from a plain run) with probability `alpha` and a
    uniformly random other token otherwise. Speculative decoding stays exact whatever it proposes."""

    def __init__(self, drafter: Drafter, reference: dict[int, int], alpha: float, seed: int = 0):
        self.drafter, self.config = drafter, drafter.config
        self.reference, self.alpha = reference, alpha
        self.rng = random.Random(seed)
        self.vocab = drafter.config.text.vocab_size
        self.ids = mx.arange(self.vocab)
        self._position, self._step = None, 0

    def __call__(self, inputs: mx.array, position: int, kv) -> tuple[mx.array, mx.array]:
        logits, state = self.drafter(inputs, position, kv)
        if position != self._position:  # a new round (every round drafts at one constant position)
            self._position, self._step = position, 0
        self._step += 1
        proposal = self.reference.get(position + self._step)
        if proposal is None or self.rng.random() >= self.alpha:
            other = self.rng.randrange(self.vocab - 1)
            proposal = other + (proposal is not None and other >= proposal)
        # The real logits stay in the graph (their cost is paid); the proposal gets the top score.
        logits = mx.where(self.ids == proposal, logits.max() + 1.0, logits)
        return logits, state


def decode(target, drafter, cache, snapshot, last_token: int, tokens: int, config, stats=None):
    """(decode seconds after the first token, tokens) of one greedy run from the restored cache."""
    cache.restore(snapshot)
    kwargs = {} if config == "plain" else {"drafter": drafter, "stats": stats,
                                          "draft_length": None if config == "adaptive" else config}
    out, first = [], None
    for token in mlx_model.stream_generate(target, [last_token], max_tokens=tokens, cache=cache, **kwargs):
        if first is None:
            first = time.perf_counter()
        out.append(token)
    return time.perf_counter() - first, out


def drafter_fraction(target, drafter, cache, snapshot, last_token: int, repeats: int) -> float:
    """Median drafter step (in a 4-step round) / median plain target step, both at this context."""
    from mlx_model.assistant import TargetCacheView, target_kv_sources

    cache.restore(snapshot)
    hidden = target.hidden_states(mx.array([[last_token]]), cache)
    position = cache.offset
    plain, draft = [], []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        mx.eval(target(mx.array([[last_token]]), cache, num_logits=1))
        plain.append(time.perf_counter() - start)
        cache.trim(1)
        views = {t: TargetCacheView(cache[i]) for t, i in target_kv_sources(target.config).items()}
        state = hidden
        start = time.perf_counter()
        for _ in range(4):
            inputs = mx.concatenate([target.model.embed(mx.array([[last_token]])), state], axis=-1)
            logits, state = drafter(inputs, position, views)
            mx.eval(mx.argmax(logits[:, -1], axis=-1), state)
        draft.append((time.perf_counter() - start) / 4)
    return statistics.median(draft[1:]) / statistics.median(plain[1:])


def curve(target, drafter, context: int, args) -> dict:
    cache = mlx_model.make_cache(target, kv_bits=args.kv_bits, rollback_slack=MAX_DRAFT + 1)
    fill(cache, target, context - 1, seed=context)
    snapshot = cache.snapshot()
    last_token = 7
    configs = ["plain"] + [int(k) for k in args.ks] + (["adaptive"] if args.adaptive else [])
    decode(target, drafter, cache, snapshot, last_token, 3, "plain")  # warm-up (compilation, allocations)
    plain_seconds, reference_tokens = decode(target, drafter, cache, snapshot, last_token, args.tokens, "plain")
    reference = {context + i: t for i, t in enumerate(reference_tokens)}  # absolute position -> greedy token
    fraction = drafter_fraction(target, drafter, cache, snapshot, last_token, args.repeats)
    print(f"context {context}: plain {(args.tokens - 1) / plain_seconds:.3f} tok/s, drafter step {fraction:.3f} "
          "of a target step", file=sys.stderr, flush=True)
    rows = {}
    for alpha in args.alphas:
        seconds = {c: [] for c in configs}
        stats = {c: SpeculativeStats() for c in configs}
        for repeat in range(args.repeats):
            shift = repeat % len(configs)
            for config in configs[shift:] + configs[:shift]:
                oracle = AcceptanceOracle(drafter, reference, alpha, seed=repeat)
                elapsed, out = decode(target, oracle, cache, snapshot, last_token, args.tokens, config,
                                      stats[config])
                if out != reference_tokens:
                    sys.exit(f"output differs from plain decoding: context {context}, alpha {alpha}, {config}")
                seconds[config].append(elapsed)
        rows[str(alpha)] = {
            str(c): {"speedup": statistics.median(p / s for p, s in zip(seconds["plain"], seconds[c])),
                     "acceptance": stats[c].acceptance_rate if c != "plain" else None,
                     "tokens_per_target_forward": stats[c].tokens_per_target_forward if c != "plain" else 1.0}
            for c in configs if c != "plain"}
        rows[str(alpha)]["plain_tps"] = (args.tokens - 1) / statistics.median(seconds["plain"])
        print(f"context {context}, alpha {alpha}: " + ", ".join(f"{c} {row['speedup']:.2f}x"
              for c, row in rows[str(alpha)].items() if c != "plain_tps"), file=sys.stderr, flush=True)
    return {"context": context, "plain_tps": (args.tokens - 1) / plain_seconds, "drafter_step_fraction": fraction,
            "identical_to_plain": True, "alphas": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=48, help="target depth (48 = the 12B; 2 on a CPU)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(range(1, 7)), help="fixed draft lengths")
    parser.add_argument("--no-adaptive", dest="adaptive", action="store_false")
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kv-bits", type=int, choices=(8, 4), default=None, help="quantized KV pages")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (smoke test of the code path)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if any(not 0 <= a <= 1 for a in args.alphas) or any(not 1 <= k <= MAX_DRAFT for k in args.ks):
        sys.exit(f"alphas must lie in [0, 1] and draft lengths in 1..{MAX_DRAFT}")
    if args.layers < 2 or args.tokens < 2 or args.repeats < 1 or min(args.contexts) < 2:
        sys.exit("need --layers >= 2 (one sliding + one full), --tokens >= 2, --repeats >= 1, --contexts >= 2")

    target, drafter = build_pair(args.layers, args.tiny)
    summary = {"device": str(mx.default_device()), "layers": args.layers, "tiny": args.tiny,
               "kv_bits": args.kv_bits, "tokens": args.tokens, "repeats": args.repeats,
               "curves": [curve(target, drafter, c, args) for c in args.contexts]}
    ks = [str(k) for k in args.ks] + (["adaptive"] if args.adaptive else [])
    for c in summary["curves"]:
        print(f"\ncontext {c['context']}, {args.layers} layers{' (tiny widths)' if args.tiny else ''}: plain "
              f"{c['plain_tps']:.2f} tok/s, drafter step = {c['drafter_step_fraction']:.3f} of a target step; "
              f"speedup over plain (median of {args.repeats} paired repeats), acceptance in brackets")
        print(f"{'alpha':>5} " + " ".join(f"{'k=' + k if k.isdigit() else k:>14}" for k in ks))
        for alpha, row in c["alphas"].items():
            cells = [f"{row[k]['speedup']:.2f}x [{row[k]['acceptance']:.2f}]" for k in ks]
            print(f"{alpha:>5} " + " ".join(f"{cell:>14}" for cell in cells))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
