"""`gemma-agent serve` against in-process generation: decode tokens/s through the server vs in-process, TTFT of a
resent long conversation vs its cold TTFT (prefix reuse across requests), and aggregate tokens/s at 1, 4 and 8
concurrent streams (batched decoding).

The server is the real `gemma-agent serve` subprocess on a loopback port, driven over HTTP by the official
`openai` client (streaming, with usage); the in-process peer is the agent's mlx backend on the same weights in
this process. The model is a random Gemma 4 (6 layers: 5 sliding with window 1024 + 1 full k_eq_v, hidden
`--hidden`) saved to a temporary directory with the test pair's tokenizer, or `--model DIR`. Medians of
`--repeats` runs; ratios are what to read.

Reproduce:
    python bench/serve.py --json                 # 8K-token conversation, 64-token replies (minutes here)
    python bench/serve.py --context 2048 --repeats 1
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
import openai  # noqa: E402

from agent.backends.mlx import MlxBackend  # noqa: E402
from mlx_model.config import TextConfig  # noqa: E402
from mlx_model.gemma4 import Model  # noqa: E402
from mlx_model.loader import save_model  # noqa: E402
from tests.serve_util import TARGET, running_server  # noqa: E402


def build_model_dir(dst: Path, hidden: int, layers: int, context: int) -> Path:
    """A random Gemma 4 with the test pair's tokenizer; the 12B's layer pattern at smaller widths."""
    raw = json.loads((TARGET / "config.json").read_text())
    heads = hidden // 128
    raw.update(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=128,
               sliding_window=1024, max_position_embeddings=max(4096, 2 * context),
               layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
               per_layer_config={str(layers - 1): {"head_dim": 256, "num_key_value_heads": 1}})
    model = Model(TextConfig.from_dict(raw))
    rng = np.random.default_rng(0)
    model.update(_random_like(model.parameters(), rng))
    mx.eval(model.parameters())
    return save_model(model, raw, dst, source_dir=TARGET)


def _random_like(tree, rng):
    if isinstance(tree, dict):
        return {k: _random_like(v, rng) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_random_like(v, rng) for v in tree]
    scale = 1.0 if tree.ndim == 1 else tree.shape[-1] ** -0.5
    base = 1.0 if tree.ndim == 1 else 0.0
    return mx.array(base + scale * rng.standard_normal(tree.shape, dtype=np.float32)).astype(tree.dtype)


def words(rng, n: int) -> str:
    return " ".join(f"w{int(x)}" for x in rng.integers(0, 5000, n))


async def stream_chat(client, model: str, messages, max_tokens: int) -> dict:
    """Time to first content, decode seconds after it, and completion tokens of one streamed request."""
    start = time.perf_counter()
    first = last = None
    usage = None
    stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                  stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
    end = time.perf_counter()
    return {"ttft": (first or end) - start, "decode": (last or end) - (first or end), "wall": end - start,
            "tokens": usage.completion_tokens, "cached": usage.prompt_tokens_details.cached_tokens}


def in_process(backend: MlxBackend, messages, max_tokens: int) -> dict:
    backend.prompts.clear()
    times = []
    start = time.perf_counter()
    completion = backend.complete(messages, [], max_tokens=max_tokens,
                                  on_text=lambda piece: times.append(time.perf_counter()))
    return {"ttft": times[0] - start, "decode": times[-1] - times[0], "tokens": completion.tokens_out}


def tps(run: dict) -> float:
    return (run["tokens"] - 1) / run["decode"] if run["decode"] > 0 else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: a random model, see --hidden)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--context", type=int, default=8192,
                        help="tokens of the resent conversation (0 skips the TTFT measurement)")
    parser.add_argument("--reply", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_model_dir(Path(tmp) / "model", args.hidden, args.layers, args.context)
        results = run(model_dir, args)
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=2))


def run(model_dir: Path, args) -> dict:
    rng = np.random.default_rng(1)
    backend = MlxBackend(str(model_dir))
    name = model_dir.name
    short = [[{"role": "user", "content": words(rng, 32)}] for _ in range(max(args.streams) * args.repeats)]
    results: dict = {"model": str(model_dir), "reply_tokens": args.reply}
    with running_server("--model", str(model_dir), "--max-batch", str(max(args.streams))) as base:
        async def go():
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", timeout=3600, max_retries=0)
            await stream_chat(client, name, short[0], 4)  # warm up the server
            served, local = [], []
            for i in range(args.repeats):
                served.append(await stream_chat(client, name, short[i], args.reply))
                local.append(in_process(backend, short[i], args.reply))
            results["decode_tps_server"] = statistics.median(tps(r) for r in served)
            results["decode_tps_in_process"] = statistics.median(tps(r) for r in local)
            results["server_vs_in_process"] = results["decode_tps_server"] / results["decode_tps_in_process"]
            if args.context:
                await resent_ttft(client, name, backend, rng, args, results)
            aggregate = {}
            for n in args.streams:
                rates = []
                for r in range(args.repeats):
                    batch = short[r * n : (r + 1) * n] if (r + 1) * n <= len(short) else short[:n]
                    start = time.perf_counter()
                    runs = await asyncio.gather(*(stream_chat(client, name, m, args.reply) for m in batch))
                    rates.append(sum(x["tokens"] for x in runs) / (time.perf_counter() - start))
                aggregate[str(n)] = statistics.median(rates)
            results["aggregate_tps"] = aggregate
            results["aggregate_vs_one_stream"] = {n: v / aggregate[str(args.streams[0])] for n, v in aggregate.items()}
            await client.close()
        asyncio.run(go())
    return results


async def resent_ttft(client, name: str, backend: MlxBackend, rng, args, results: dict) -> None:
    """TTFT of a cold conversation of about `args.context` tokens, then of the same conversation resent with a
    new turn appended."""
    cold, warm, cached = [], [], []
    for _ in range(args.repeats):
        turns = [{"role": "system", "content": words(rng, 200)}]
        while backend.count_tokens(json.dumps(turns)) < args.context * 0.9:
            turns += [{"role": "user", "content": words(rng, 300)},
                      {"role": "assistant", "content": words(rng, 100)}]
        turns.append({"role": "user", "content": words(rng, 20)})
        first = await stream_chat(client, name, turns, 8)
        turns += [{"role": "assistant", "content": words(rng, 30)},
                  {"role": "user", "content": words(rng, 20)}]
        again = await stream_chat(client, name, turns, 8)
        cold.append(first["ttft"])
        warm.append(again["ttft"])
        cached.append(again["cached"])
    results["conversation_tokens"] = backend.count_tokens(json.dumps(turns))
    results["ttft_cold_s"] = statistics.median(cold)
    results["ttft_resent_s"] = statistics.median(warm)
    results["ttft_cold_vs_resent"] = results["ttft_cold_s"] / results["ttft_resent_s"]
    results["resent_cached_tokens"] = statistics.median(cached)


def print_table(r: dict) -> None:
    print(f"model {r['model']}, {r['reply_tokens']}-token replies (medians)")
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'decode tok/s through the server':<44}{r['decode_tps_server']:>12.1f}")
    print(f"{'decode tok/s in process':<44}{r['decode_tps_in_process']:>12.1f}")
    print(f"{'server / in process':<44}{r['server_vs_in_process']:>11.2f}x")
    if "ttft_cold_s" in r:
        print(f"{'TTFT cold, ' + str(r['conversation_tokens']) + '-token conversation (s)':<44}"
              f"{r['ttft_cold_s']:>12.3f}")
        print(f"{'TTFT resent + new turn (s)':<44}{r['ttft_resent_s']:>12.3f}")
        print(f"{'cold / resent':<44}{r['ttft_cold_vs_resent']:>11.1f}x")
    for n, value in r["aggregate_tps"].items():
        ratio = r["aggregate_vs_one_stream"][n]
        print(f"{'aggregate tok/s, ' + n + ' streams':<44}{value:>12.1f}   {ratio:.2f}x one stream")


if __name__ == "__main__":
    main()
