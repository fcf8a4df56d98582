"""Agent-trace replay in the exact prompt format: tokens reused and time to first token per turn, with prefix
reuse vs without.

A 20-turn agent conversation is rendered each turn by agent.chat_format (byte-exact with Gemma 4's chat
template) and tokenized: turn 1 is a long system prompt (instructions, the agent's real tool declarations, a
repo-map-like text: half the final length by default) and the task; every turn the model answers (`--reply`
tokens, greedy, for the timing) and the trace grows by a scripted reply (text and a read_file call) and its tool
result, up to `--final-tokens`. The exact format drops the previous prompt's empty thought channel
(`<|channel>thought\n<channel|>`) and the model's reply is re-rendered after it, so turn N's prompt is not an
extension of turn N-1's cache: the cache rolls back to the divergence and prefills from there.
With reuse, one `PromptCache` serves all turns. Without, every turn prefills its whole prompt into a fresh cache
(what a stateless local server does). Both run in the same process on the same prompts; the first token of every
turn must agree between the two. The tokenizer is a byte-level BPE (vocabulary 4096, trained here on Python's
own sources) with every control string of the format as one special token, as Gemma's has.
The model is a random Gemma 4 of 6 layers (5 sliding with window 1024 + 1 full k_eq_v: the 12B's 40:8 mix),
float32. Reuse does not depend on the model's size; the TTFT ratio does: a turn's new tokens attend to the whole
trace (twice a cold prefill's average context), so the more of the cost attention over the context is, the
higher the ratio. `--model small` shrinks every width (hidden 256, 4 heads of 64), which makes attention nearly
all of the cost: the worst case. `--model 12b-widths` keeps the 12B's per-layer shapes (hidden 3840, MLP
15360, 16 query heads, sliding 8 KV heads x 256, full 1 x 512), so the split between weight products and
attention is the real model's at every context length (only the depth and the vocabulary are cut).

Reproduce:
    python bench/agent_prefix.py --json                       # trace growing to 4K tokens (minutes here)
    python bench/agent_prefix.py --final-tokens 32768 --cold-turns 1 20 --repeats 3 --json  # the issue's 32K trace
    python bench/agent_prefix.py --model 12b-widths --final-tokens 32768 --cold-turns 1 20 --reply 8 --json
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402

from long_context import build_model  # noqa: E402

from agent.chat_format import CONTROL_MARKERS, render_conversation  # noqa: E402
from mlx_model.prefix_cache import PromptCache  # noqa: E402

VOCAB = 4096
REPLY_OVERHEAD = 60  # tokens a turn adds besides its tool result: reply text, call, response markup (about)


def corpus() -> str:
    """Real text to train the tokenizer on and to cut prompts and tool results from: Python's own sources."""
    import inspect
    import argparse as m1, json.decoder as m2, pathlib as m3, textwrap as m4, dataclasses as m5, typing as m6

    return "\n".join(inspect.getsource(m) for m in (m1, m2, m3, m4, m5, m6))


def make_tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", *CONTROL_MARKERS]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


class Trace:
    """The growing conversation: real tool declarations, text cut from the corpus in token-sized pieces."""

    def __init__(self, tokenizer, first: int):
        from tools.toolbox import collect_specs

        self.tokenizer = tokenizer
        self.ids = tokenizer.encode(corpus()).ids
        self.cursor = 0
        self.tools = [spec.declaration() for spec in collect_specs()]
        self.messages = [{"role": "system", "content": "You are a coding agent working in a git repository. "
                          "Use the tools to read, search and edit; run the tests before you finish.\n"}]
        self.messages[0]["content"] += self.text(max(1, first - len(self.prompt())))
        self.messages.append({"role": "user", "content": "Fix the failing test tests/test_parse.py::test_empty."})

    def text(self, tokens: int) -> str:
        if self.cursor + tokens > len(self.ids):
            self.cursor = 0
        piece = self.tokenizer.decode(self.ids[self.cursor : self.cursor + tokens])
        self.cursor += tokens
        return piece

    def prompt(self) -> list[int]:
        return self.tokenizer.encode(render_conversation(self.messages, self.tools)).ids

    def add_turn(self, turn: int, result_tokens: int) -> None:
        call = {"name": "read_file", "arguments": {"path": f"src/module_{turn}.py", "start_line": 1}}
        self.messages += [
            {"role": "assistant", "content": f"Step {turn}: reading the next module."},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "read_file", "content": self.text(result_tokens)},
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--final-tokens", type=int, default=4096)
    parser.add_argument("--first-tokens", type=int, default=None, help="turn-1 prompt (default: final / 2)")
    parser.add_argument("--reply", type=int, default=32, help="tokens the model writes per turn")
    parser.add_argument("--kv-bits", type=int, default=None, choices=[16, 8, 4])
    parser.add_argument("--cold-turns", type=int, nargs="+", default=None,
                        help="measure the no-reuse TTFT only for these turns (default: all; cold 32K prefills are slow)")
    parser.add_argument("--model", choices=["small", "12b-widths"], default="small",
                        help="small: all widths tiny (attention dominates, the worst case for the TTFT ratio); "
                             "12b-widths: the 12B's per-layer shapes, so attention's share of the cost is the 12B's")
    parser.add_argument("--repeats", type=int, default=1,
                        help="for each cold turn after the first, measure reuse (from the saved cache of the turn "
                             "before) and cold TTFT this many times, interleaved; the ratio is the median of the "
                             "pairs (a shared machine's load drifts between single samples minutes apart)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    saved = Path(tempfile.mkdtemp(prefix="agent_prefix_"))
    first = args.first_tokens or args.final_tokens // 2
    growth = max(1, (args.final_tokens - first) // (args.turns - 1) - REPLY_OVERHEAD)
    if args.model == "12b-widths":  # the 12B's layer shapes and its 5:1 sliding:full mix, 6 layers deep
        model = build_model(6, hidden=3840, intermediate=15360, vocab=4096, dtype=mx.float32)
    else:
        model = build_model(6, hidden=256, intermediate=512, vocab=4096, dtype=mx.float32, heads=4,
                            sliding_kv_heads=2, sliding_head_dim=64, full_head_dim=64)
    trace = Trace(make_tokenizer(corpus()), first)
    prompt_cache = PromptCache(model, kv_bits=args.kv_bits)
    rows, prompts = [], []
    prompt_cache_held = 0
    for turn in range(1, args.turns + 1):
        prompt = trace.prompt()
        if args.repeats > 1 and turn > 1 and (args.cold_turns is None or turn in args.cold_turns):
            prompt_cache.save(saved / f"turn{turn}.safetensors")  # the cache this turn starts from
        result = prompt_cache.generate(prompt, max_tokens=args.reply)
        prompts.append(list(prompt))
        rows.append({"turn": turn, "prompt_tokens": len(prompt), "reused": result.reused_tokens,
                     "prefilled": len(prompt) - result.reused_tokens, "ttft_reuse_s": result.prompt_seconds,
                     "first_token": result.tokens[0]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        rows[-1]["cached_before"] = prompt_cache_held
        trace.add_turn(turn, growth)
        prompt_cache_held = len(prompt_cache.tokens)  # what the cache holds when the next turn starts

    for row, prompt in zip(rows, prompts):
        row["reuse_fraction"] = row["reused"] / row["prompt_tokens"]
        if args.cold_turns is not None and row["turn"] not in args.cold_turns:
            row.update(ttft_cold_s=None, ttft_ratio=None, same_first_token=None)
            continue
        pairs = []  # (reuse s, cold s)
        state = saved / f"turn{row['turn']}.safetensors"
        for repeat in range(args.repeats if state.exists() else 1):
            cold = mlx_model.generate(model, prompt, max_tokens=1,
                                      cache=mlx_model.make_cache(model, kv_bits=args.kv_bits))
            row["same_first_token"] = cold.tokens[0] == row["first_token"]
            if repeat == 0:
                pairs.append((row["ttft_reuse_s"], cold.prompt_seconds))
                continue
            again = PromptCache(model, kv_bits=args.kv_bits)
            again.load(state)
            pairs.append((again.generate(prompt, max_tokens=1).prompt_seconds, cold.prompt_seconds))
        ratios = sorted(reuse / cold for reuse, cold in pairs)
        row["ttft_cold_s"] = statistics.median(cold for _, cold in pairs)
        row["ttft_ratio"] = statistics.median(ratios)
        row["ttft_ratio_range"] = [ratios[0], ratios[-1]]
        print(json.dumps(row), file=sys.stderr, flush=True)
    shutil.rmtree(saved, ignore_errors=True)

    later = rows[1:]
    summary = {
        "min_reuse_fraction_from_turn_2": min(r["reuse_fraction"] for r in later),
        # reused / what the previous turn left in the cache (its prompt and all but the last reply token); the
        # rest is its empty thought channel and its reply, which the exact format renders differently
        "reused_of_cached_from_turn_2": sum(r["reused"] for r in later) / sum(r["cached_before"] for r in later),
        "aggregate_reuse_fraction_from_turn_2": sum(r["reused"] for r in later) / sum(r["prompt_tokens"] for r in later),
        "last_turn_ttft_ratio": rows[-1]["ttft_ratio"],
        "last_turn_ttft_ratio_range": rows[-1].get("ttft_ratio_range"),
        "tokens_prefilled_with_reuse": sum(r["prefilled"] for r in rows),
        "tokens_prefilled_without": sum(r["prompt_tokens"] for r in rows),
        "all_first_tokens_agree": all(r["same_first_token"] is not False for r in rows),
    }
    print(f"Agent trace ({args.model} model; {mlx_model.blas.describe()}): {args.turns} turns, {first} -> {rows[-1]['prompt_tokens']} tokens, reply {args.reply}, "
          f"tool result {growth} tokens/turn, kv_bits={args.kv_bits}; TTFT x = with reuse / without "
          f"(median of {args.repeats} interleaved pairs after turn 1)")
    print(f"{'turn':>4} {'prompt':>7} {'reused':>7} {'prefill':>7} {'reuse%':>7} {'TTFT reuse s':>12} "
          f"{'TTFT cold s':>11} {'x':>6}")
    def fmt(value, spec):
        return format("-", f">{spec.split('.')[0]}") if value is None else format(value, spec)

    for r in rows:
        print(f"{r['turn']:>4} {r['prompt_tokens']:>7} {r['reused']:>7} {r['prefilled']:>7} "
              f"{100 * r['reuse_fraction']:>6.1f}% {r['ttft_reuse_s']:>12.3f} {fmt(r['ttft_cold_s'], '11.3f')} "
              f"{fmt(r['ttft_ratio'], '6.3f')}")
    print(f"from turn 2: min reuse {100 * summary['min_reuse_fraction_from_turn_2']:.1f}%, aggregate "
          f"{100 * summary['aggregate_reuse_fraction_from_turn_2']:.1f}%; last-turn TTFT x "
          f"{summary['last_turn_ttft_ratio']:.3f}; tokens prefilled {summary['tokens_prefilled_with_reuse']} vs "
          f"{summary['tokens_prefilled_without']}; reused / cached by the previous turn "
          f"{100 * summary['reused_of_cached_from_turn_2']:.1f}%; first tokens agree: {summary['all_first_tokens_agree']}")
    if args.json:
        print(json.dumps({"benchmark": "agent_prefix", "args": vars(args), "summary": summary, "turns": rows},
                         indent=2))


if __name__ == "__main__":
    main()
