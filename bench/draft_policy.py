"""Draft-length policies replayed on the trained pair's real acceptance, free of timing noise.

Greedy speculative decoding is deterministic given the drafts: a round that drafts k tokens at position p keeps
min(k, L_p) of them, where L_p is how many of the drafter's next 8 drafts from p match the target's greedy
continuation. This script measures L_p at every position of held-out prompts (the same ones as
bench/speculative.py), measures the costs (a plain decode step, the drafter's first and later steps, a verify
forward over k + 1 tokens) on the same pair in the same process, and replays fixed k = 1..8 and the adaptive
`DraftLengthPolicy` over those traces, with the measured costs jittered (log-normal, --jitter) to stand in for a
noisy machine. It prints predicted speedups (tokens per unit of plain-step time); use it to compare policies,
and bench/speculative.py for wall-clock figures.

Reproduce: .venv/bin/python bench/draft_policy.py --json   (about 3 minutes)
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

from bench.speculative import held_out_prompts, load_trained_pair  # noqa: E402
from mlx_model.assistant import TargetCacheView, target_kv_sources  # noqa: E402
from mlx_model.speculative import MAX_DRAFT, DraftLengthPolicy  # noqa: E402


def draft(target, drafter, cache, token: int, hidden: mx.array, k: int) -> list[int]:
    """The drafter's k greedy drafts after `token`, as the speculative loop makes them."""
    views = {kind: TargetCacheView(cache[i]) for kind, i in target_kv_sources(target.config).items()}
    current, state, drafts = mx.array([[token]]), hidden, []
    for _ in range(k):
        inputs = mx.concatenate([target.model.embed(current), state], axis=-1)
        logits, state = drafter(inputs, cache.offset, views)
        current = mx.argmax(logits[:, -1], axis=-1).reshape(1, 1)
        drafts.append(current)
    return mx.concatenate(drafts, axis=1)[0].tolist()


def acceptance_lengths(target, drafter, prompt: list[int], steps: int) -> list[int]:
    """L_p for p = 0..steps-1: how many of MAX_DRAFT drafts from position p the greedy continuation keeps."""
    reference = list(mlx_model.stream_generate(target, prompt, max_tokens=steps + MAX_DRAFT + 1))
    cache = target.make_cache(rollback_slack=MAX_DRAFT + 1)
    ids = mx.array([prompt])
    target.hidden_states(ids[:, :-1], cache)
    hidden = target.hidden_states(ids[:, -1:], cache)
    lengths = []
    for p in range(steps):
        drafts = draft(target, drafter, cache, reference[p], hidden[:, -1:, :], MAX_DRAFT)
        kept = 0
        while kept < MAX_DRAFT and drafts[kept] == reference[p + 1 + kept]:
            kept += 1
        lengths.append(kept)
        hidden = target.hidden_states(mx.array([[reference[p]]]), cache)
    return lengths


def measure_costs(target, drafter, prompt: list[int], repeats: int) -> dict:
    """Median seconds of a plain step, a verify forward over k + 1 tokens, the drafter's first / later steps,
    all measured round-robin so a load change on this shared machine hits every one alike."""
    cache = target.make_cache(rollback_slack=MAX_DRAFT + 1)
    hidden = target.hidden_states(mx.array([prompt]), cache)[:, -1:, :]
    mx.eval(hidden)

    def forward(length: int) -> None:
        mx.eval(target.logits(target.hidden_states(mx.array([[7] * length]), cache)))
        cache.trim(length)

    jobs = {"plain": lambda: forward(1), "draft_1": lambda: draft(target, drafter, cache, 7, hidden, 1),
            f"draft_{MAX_DRAFT}": lambda: draft(target, drafter, cache, 7, hidden, MAX_DRAFT)}
    jobs.update({f"verify_{k}": (lambda k=k: forward(k + 1)) for k in range(1, MAX_DRAFT + 1)})
    samples = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            samples[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in samples.items()}
    first = median["draft_1"]
    return {"plain": median["plain"], "verify": {k: median[f"verify_{k}"] for k in range(1, MAX_DRAFT + 1)},
            "first_draft": first, "later_draft": max(0.0, (median[f"draft_{MAX_DRAFT}"] - first) / (MAX_DRAFT - 1))}


def replay(lengths: list[int], costs: dict, fixed: int | None, jitter: float, rng: random.Random,
           tokens: int) -> float:
    """Plain-step-time units spent producing `tokens` tokens with a policy (the speculative loop's rules)."""
    policy = DraftLengthPolicy(fixed)

    def noisy(seconds: float) -> float:
        return seconds * rng.lognormvariate(0.0, jitter) if jitter else seconds

    position, produced, spent = 0, 1, 0.0
    while produced < tokens:
        k = min(policy.next_length(), tokens - produced - 1)
        if k <= 0:
            seconds = noisy(costs["plain"])
            policy.record_plain(seconds)
            spent, position, produced = spent + seconds, position + 1, produced + 1
            continue
        kept = min(k, lengths[position])
        first = noisy(costs["first_draft"])
        later = noisy(costs["later_draft"] * (k - 1))
        verify = noisy(costs["verify"][k])
        policy.record_round(k, kept, first, later, verify)
        spent += first + later + verify
        position, produced = position + kept + 1, produced + kept + 1
    return spent / costs["plain"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", type=Path, default=ROOT / "tests" / "fixtures" / "draft_pair")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[96, 256], metavar="N")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--jitter", type=float, default=0.1, help="log-normal sigma on each measured cost")
    parser.add_argument("--seeds", type=int, default=5, help="jitter seeds per configuration (median taken)")
    parser.add_argument("--cost-repeats", type=int, default=100, help="round-robin timings of each cost")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    target, drafter, tokenizer = load_trained_pair(args.pair)
    configs: list[int | None] = list(range(1, MAX_DRAFT + 1)) + [None]
    summary = {"jitter": args.jitter, "runs": []}
    for prompt_tokens in args.prompt_tokens:
        prompts = held_out_prompts(tokenizer, args.prompts, prompt_tokens)
        traces = [acceptance_lengths(target, drafter, p, args.max_tokens) for p in prompts]
        costs = measure_costs(target, drafter, prompts[0], repeats=args.cost_repeats)
        speedups = {}
        for config in configs:
            per_seed = []
            for seed in range(args.seeds):
                rng = random.Random(seed)
                spent = sum(replay(t, costs, config, args.jitter, rng, args.max_tokens) for t in traces)
                per_seed.append(args.max_tokens * len(traces) / spent)
            speedups["adaptive" if config is None else str(config)] = statistics.median(per_seed)
        ratio = {k: v / costs["plain"] for k, v in costs["verify"].items()}
        summary["runs"].append({"prompt_tokens": prompt_tokens, "speedups": speedups,
                                "mean_acceptance_length": statistics.mean(x for t in traces for x in t),
                                "costs_relative_to_plain": {"first_draft": costs["first_draft"] / costs["plain"],
                                                            "later_draft": costs["later_draft"] / costs["plain"],
                                                            "verify": ratio}})
    for run in summary["runs"]:
        rel = run["costs_relative_to_plain"]
        print(f"\n{run['prompt_tokens']}-token prompts: costs / plain step: first draft {rel['first_draft']:.3f}, "
              f"later draft {rel['later_draft']:.3f}, verify k=1 {rel['verify'][1]:.2f} .. k=8 {rel['verify'][8]:.2f}")
        print("  predicted speedup: " + "  ".join(f"{k}: {v:.2f}x" for k, v in run["speedups"].items()))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
