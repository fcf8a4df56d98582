"""`gemma-agent generate`: stream a completion from a local model and report its speed."""
from __future__ import annotations

import argparse
import resource
import sys
import time

from agent.commands.model_errors import load_or_explain


# Gemma 3's chat format (ai.google.dev/gemma/docs/core/prompt-formatting-gemma): a user turn, then the model's.
GEMMA3_USER_TURN = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a local model (speed check)",
        description="Load the model (printing load time and peak memory), stream a completion for one prompt, "
                    "then print prompt and generation tokens/s and peak memory (on stderr). Missing weights are "
                    "downloaded only with --yes. The prompt is sent as a user turn in Gemma 4's chat format "
                    "unless --raw (Gemma 3 models: Gemma 3's turn markup; BOS always).",
    )
    p.add_argument("--model", metavar="SPEC", default=None,
                   help="weights: a directory (Hugging Face or MLX layout, LM Studio), a .gguf file, "
                        "ollama:NAME[:TAG] or a hub repo ORG/NAME[@REVISION] (default google/gemma-4-12B-it, 4-bit)")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the prompt text")
    p.add_argument("--max-tokens", type=int, default=256, metavar="N", help="most tokens to generate (256)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--drafter", metavar="SPEC", default=None,
                   help="MTP drafter (gemma4_unified_assistant), same forms as --model; default: the 12B's assistant "
                        "when the model is a Gemma 4 12B; none = plain decoding")
    p.add_argument("--yes", action="store_true", help="download missing weights without asking")
    p.add_argument("--draft-length", type=int, default=None, metavar="K",
                   help="drafts per round, 0-8 (default: adaptive; 0 = plain decoding)")
    p.add_argument("--raw", action="store_true", help="feed the prompt as is, without the chat turn markup")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import mlx_model
    import mlx.core as mx
    from agent.chat_template import select_format
    from agent.weights import WeightsError, resolve
    from mlx_model.gemma3 import Gemma3Config

    if args.max_tokens < 1:
        print("error: --max-tokens must be at least 1", file=sys.stderr)
        return 2
    if args.draft_length is not None and not 0 <= args.draft_length <= 8:
        print("error: --draft-length must be between 0 and 8", file=sys.stderr)
        return 2
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        print("error: --temperature must be >= 0 and --top-p in (0, 1]", file=sys.stderr)
        return 2
    try:
        model_path, drafter_path = resolve(args.model, args.drafter, download=args.yes, ask=None)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    loaded = load_or_explain(model_path)
    if loaded is None:
        return 2
    model, tokenizer = loaded
    drafter = None
    if drafter_path:
        try:
            drafter = mlx_model.load_drafter(drafter_path)
        except mlx_model.ModelLoadError as exc:
            print(f"error: cannot load the drafter: {exc}", file=sys.stderr)
            return 2
    print(f"loaded {model_path}{' + drafter ' + drafter_path if drafter_path else ''} in "
          f"{time.perf_counter() - start:.1f}s, peak memory {mx.get_peak_memory() / 2**30:.2f} GiB "
          f"(peak RSS {peak_rss_bytes() / 2**30:.2f} GiB)", file=sys.stderr)
    if tokenizer is None:
        print(f"error: {model_path} has no tokenizer.json; copy the tokenizer files of the original checkpoint "
              "into it", file=sys.stderr)
        return 2
    if isinstance(model.config, Gemma3Config):  # Gemma 3 turn markup, and its BOS even for --raw prompts
        text = "<bos>" + (args.prompt if args.raw else GEMMA3_USER_TURN.format(args.prompt))
    else:
        text = args.prompt if args.raw else select_format(model_path).render([{"role": "user", "content": args.prompt}])
    ids = tokenizer.encode(text)
    if not ids:
        print("error: the prompt is empty", file=sys.stderr)
        return 2
    decoder = mlx_model.StreamingDecoder(tokenizer, skip_special_tokens=True)

    def show(token: int) -> None:
        if token not in tokenizer.eos_ids:
            sys.stdout.write(decoder.add(token))
            sys.stdout.flush()

    result = mlx_model.generate(model, ids, max_tokens=args.max_tokens, temperature=args.temperature,
                                top_p=args.top_p, stop_ids=tokenizer.eos_ids, seed=args.seed, on_token=show,
                                drafter=drafter, draft_length=args.draft_length)
    sys.stdout.write(decoder.flush() + "\n")
    print(f"prompt: {result.prompt_tokens} tokens, {result.prompt_tps:.2f} tokens/s | "
          f"generation: {len(result.tokens)} tokens, {result.generation_tps:.2f} tokens/s | "
          f"peak memory: {result.peak_memory_bytes / 2**30:.2f} GiB | stop: {result.finish_reason}",
          file=sys.stderr)
    if result.speculative is not None:
        st = result.speculative
        print(f"drafting: {st.accepted}/{st.drafted} drafts accepted ({st.acceptance_rate:.0%}), "
              f"{st.tokens_per_target_forward:.2f} tokens per target forward, drafter {st.draft_seconds:.2f}s / "
              f"target {st.target_seconds:.2f}s", file=sys.stderr)
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
