"""Speculative decoding with the MTP drafter vs plain decoding, in the same run.

Part 1 (trained pair, from bench/train_pair.py; default tests/fixtures/draft_pair): greedy generation on
held-out stdlib code prompts (files the training never saw) of 96 and 256 tokens, plain vs fixed draft lengths
k = 1..8 vs adaptive. For each: acceptance rate, tokens per target forward, wall-clock speedup over plain (the
median and range over --repeats of plain's time / the config's time, all configs interleaved prompt by prompt),
and whether the output is token-for-token identical to plain decoding.

Part 2 (--real-shapes): the drafter's step cost as a fraction of a target decode step at the real 12B widths
(random weights, 4-bit): target with 12B layer shapes at reduced depth (1 sliding + 1 full layer, timed, and
extrapolated to 48 layers: head + 48 x the per-layer cost), drafter with the reported assistant shapes (4 layers,
hidden 1024, centroid head with 2048 centroids, top-32).

Reproduce: .venv/bin/python bench/speculative.py --json [--real-shapes]   (about 10 minutes; --configs 3 4 adaptive
--repeats 3 for a quicker look)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402

from mlx_model.speculative import SpeculativeStats  # noqa: E402


def load_trained_pair(pair: Path):
    """(target, drafter, tokenizer) in float32 from a bench/train_pair.py output directory; exits if absent."""
    if not (pair / "drafter" / "config.json").is_file():
        sys.exit(f"no trained pair in {pair}: run bench/train_pair.py first")
    target, tokenizer = mlx_model.load(pair / "target", dtype=mx.float32)
    return target, mlx_model.load_drafter(pair / "drafter", dtype=mx.float32), tokenizer


def held_out_prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    from bench.train_pair import is_held_out, read, stdlib_files

    prompts = []
    for path in stdlib_files():
        if not is_held_out(path):
            continue
        ids = tokenizer.encode(read(path))
        if len(ids) >= length * 2:
            start = len(ids) // 3  # from the middle of the file, not its license header
            prompts.append(ids[start:start + length])
        if len(prompts) == count:
            break
    return prompts


def generate_one(target, drafter, prompt, max_tokens, config, stats):
    """Time one greedy generation of `prompt` under `config` ("plain", a draft length, or "adaptive")."""
    start = time.perf_counter()
    if config == "plain":
        tokens = list(mlx_model.stream_generate(target, prompt, max_tokens=max_tokens))
    else:
        tokens = list(mlx_model.stream_generate(target, prompt, max_tokens=max_tokens, drafter=drafter,
                                                draft_length=None if config == "adaptive" else config,
                                                stats=stats))
    return time.perf_counter() - start, tokens


def trained_pair_bench(target, drafter, tokenizer, args, prompt_tokens: int) -> dict:
    """Every config on every prompt, interleaved prompt by prompt (the config order rotates), so a load change
    on this shared machine hits all configs alike; a repeat's speedup is plain's time over the config's time in
    that repeat, and the table gives the median of those paired ratios and their range."""
    prompts = held_out_prompts(tokenizer, args.prompts, prompt_tokens)
    configs = ["plain"] + [int(c) if c.isdigit() else c for c in args.configs if c != "plain"]
    generate_one(target, drafter, prompts[0], 8, 2, SpeculativeStats())  # warm-up
    seconds = {c: [0.0] * args.repeats for c in configs}
    outputs = {c: [] for c in configs}
    stats = {c: SpeculativeStats() for c in configs}
    for repeat in range(args.repeats):
        for i, prompt in enumerate(prompts):
            shift = (repeat * len(prompts) + i) % len(configs)
            for config in configs[shift:] + configs[:shift]:
                elapsed, tokens = generate_one(target, drafter, prompt, args.max_tokens, config,
                                               stats[config] if repeat == args.repeats - 1 else SpeculativeStats())
                seconds[config][repeat] += elapsed
                if repeat == args.repeats - 1:
                    outputs[config].append(tokens)
    table = {}
    for config in configs:
        ratios = [plain / mine for plain, mine in zip(seconds["plain"], seconds[config])]
        st = stats[config]
        drafting = config != "plain"
        table[str(config)] = {
            "median_seconds": statistics.median(seconds[config]),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "acceptance_rate": st.acceptance_rate if drafting else None,
            "tokens_per_target_forward": st.tokens_per_target_forward if drafting else 1.0,
            "identical_to_plain": outputs[config] == outputs["plain"],
            "draft_seconds_share": (st.draft_seconds / (st.draft_seconds + st.target_seconds)
                                    if drafting and st.target_seconds else 0.0),
        }
    return {"prompts": len(prompts), "prompt_tokens": prompt_tokens, "max_tokens": args.max_tokens,
            "repeats": args.repeats, "configs": table}


def real_shapes_bench(repeats: int) -> dict:
    from mlx_model.assistant import AssistantConfig, Drafter, TargetCacheView, target_kv_sources
    from mlx_model.config import TextConfig
    from mlx_model.gemma4 import Model

    S, F = "sliding_attention", "full_attention"
    base = dict(model_type="gemma4_unified_text", vocab_size=262144, hidden_size=3840, intermediate_size=15360,
                num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=1024,
                final_logit_softcapping=30.0)

    def build(layers):
        model = Model(TextConfig.from_dict(dict(base, num_hidden_layers=len(layers), layer_types=layers)))
        mlx_model.quantize_model(model, 4)
        mx.eval(model.parameters())
        return model

    def step_time(model, cache, token):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            mx.eval(model(token, cache))
            times.append(time.perf_counter() - start)
            cache.trim(1)
        return statistics.median(times)

    context = mx.random.randint(3, 262144, (1, 64))
    results = {}
    for name, layers in (("head_only", [F]), ("two_layers", [S, F])):
        model = build(layers)
        cache = mlx_model.make_cache(model)
        model(context, cache)
        results[name] = step_time(model, cache, context[:, -1:])
        del model, cache
    per_layer = max(results["two_layers"] - results["head_only"], 1e-9)  # one sliding layer
    target = build([S, F])
    cache = mlx_model.make_cache(target)
    target(context, cache)
    drafter = Drafter(AssistantConfig.from_dict({
        "model_type": "gemma4_unified_assistant", "backbone_hidden_size": 3840, "use_ordered_embeddings": True,
        "num_centroids": 2048, "centroid_intermediate_top_k": 32,
        "text_config": dict(base, hidden_size=1024, intermediate_size=4096, num_hidden_layers=4,
                            num_attention_heads=16, layer_types=[S, S, S, F])}))
    mlx_model.quantize_model(drafter, 4)
    mx.eval(drafter.parameters())
    views = {t: TargetCacheView(cache[i]) for t, i in target_kv_sources(target.config).items()}
    inputs = mx.random.normal((1, 1, 2 * 3840)).astype(mx.bfloat16)
    drafter_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(drafter(inputs, cache.offset, views))
        drafter_times.append(time.perf_counter() - start)
    drafter_step = statistics.median(drafter_times)
    target_48 = results["head_only"] + 47 * per_layer  # head + 48 layers (counted as sliding-layer costs)
    return {"target_step_2_layers_s": results["two_layers"], "target_step_48_layers_estimate_s": target_48,
            "drafter_step_s": drafter_step, "drafter_fraction_of_2_layer_target": drafter_step / results["two_layers"],
            "drafter_fraction_of_48_layer_target": drafter_step / target_48}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", type=Path, default=ROOT / "tests" / "fixtures" / "draft_pair")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[96, 256], metavar="N",
                        help="prompt lengths to run (default: 96 and 256 tokens)")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=[str(k) for k in range(1, 9)] + ["adaptive"],
                        choices=[str(k) for k in range(1, 9)] + ["adaptive"], metavar="K",
                        help="draft lengths to compare with plain decoding: 1..8 and/or adaptive (default: all)")
    parser.add_argument("--real-shapes", action="store_true", help="also time the drafter at 12B widths")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    target, drafter, tokenizer = load_trained_pair(args.pair)
    summary = {"blas": mlx_model.blas.describe(),
               "trained_pair": [trained_pair_bench(target, drafter, tokenizer, args, n) for n in args.prompt_tokens]}
    print(f"MLX float32 products: {summary['blas']}")
    for t in summary["trained_pair"]:
        print(f"\ntrained pair, {t['prompts']} held-out stdlib prompts of {t['prompt_tokens']} tokens x "
              f"{t['max_tokens']} greedy tokens; speedup: median [range] of {t['repeats']} paired repeats")
        print(f"{'config':>9} {'speedup':>8} {'range':>13} {'accept':>7} {'tok/fwd':>8} {'draft%':>7} {'identical':>9}")
        for name, row in t["configs"].items():
            accept = "-" if row["acceptance_rate"] is None else f"{row['acceptance_rate']:.2f}"
            spread = f"[{row['speedup_min']:.2f}-{row['speedup_max']:.2f}]"
            print(f"{name:>9} {row['speedup']:7.2f}x {spread:>13} {accept:>7} {row['tokens_per_target_forward']:8.2f} "
                  f"{row['draft_seconds_share']:7.0%} {str(row['identical_to_plain']):>9}")
    if args.real_shapes:
        summary["real_shapes"] = r = real_shapes_bench(max(3, args.repeats))
        print(f"\n12B widths, 4-bit: target step {r['target_step_2_layers_s']:.3f}s (2 layers), "
              f"~{r['target_step_48_layers_estimate_s']:.2f}s estimated at 48 layers; drafter step "
              f"{r['drafter_step_s']:.3f}s = {r['drafter_fraction_of_2_layer_target']:.2f} of the 2-layer target, "
              f"{r['drafter_fraction_of_48_layer_target']:.3f} of 48 layers")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
