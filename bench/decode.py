"""Prefill and decode speed of our Gemma 4 port vs mlx-vlm's `gemma4_unified`, same weights, same run.

The model has the real 12B widths (hidden 3840, 16 heads, sliding head dim 256 with 8 KV heads, full head dim 512
with 1 KV head and k_eq_v, MLP 15360, vocab 262144) at reduced depth (default 6 layers: 5 sliding + 1 full),
random bf16 weights written once as a Hugging Face checkpoint, then quantized in each process the same way
(affine, group 64, --bits). Each implementation runs in its own process (so peak memory is its own), warms
up, then times `--repeats` greedy generations: prefill tokens/s (prompt tokens / time to first token) and
decode tokens/s (after the first token). Medians and ratios (ours / mlx-vlm) are printed as a table and JSON.

Reproduce:
    .venv/bin/pip install --no-deps mlx-vlm==0.7.10 mlx-lm==0.32.2 && .venv/bin/pip install requests pillow
    .venv/bin/python bench/decode.py --json
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLIDING, FULL = "sliding_attention", "full_attention"


def text_config(layers: int) -> dict:
    layer_types = [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(layers - 1)] + [FULL]
    return {
        "model_type": "gemma4_unified_text", "vocab_size": 262144, "hidden_size": 3840,
        "intermediate_size": 15360, "num_hidden_layers": layers, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512, "num_global_key_value_heads": 1,
        "attention_k_eq_v": True, "sliding_window": 1024, "layer_types": layer_types,
        "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 262144, "tie_word_embeddings": True,
        "rope_parameters": {
            SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
            FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
    }


def build_checkpoint(directory: Path, layers: int, seed: int, text: dict | None = None) -> None:
    """Random bf16 weights with the multimodal checkpoint's names (`model.language_model.*`); `text` replaces
    the 12B-width text config of `layers` layers."""
    import mlx.core as mx

    sys.path.insert(0, str(ROOT))
    from mlx_model.config import TextConfig
    from mlx_model.gemma4 import Model
    from mlx.utils import tree_flatten

    text = text or text_config(layers)
    config = {"model_type": "gemma4_unified", "text_config": text, "vision_config": None, "audio_config": None,
              "architectures": ["Gemma4UnifiedForConditionalGeneration"], "tie_word_embeddings": True,
              "vocab_size": text["vocab_size"]}
    shapes = {k: v.shape for k, v in tree_flatten(Model(TextConfig.from_dict(text)).parameters())}
    mx.random.seed(seed)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or name.endswith("layer_scalar"):
            value = mx.ones(shape, dtype=mx.bfloat16)
        else:
            value = (mx.random.normal(shape) * 0.02).astype(mx.bfloat16)
        weights["model.language_model." + name[len("model."):]] = value
    directory.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(directory / "model.safetensors"), weights)
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def quantize(model, bits: int) -> None:
    import mlx.nn as nn

    nn.quantize(model, group_size=64, bits=bits,
                class_predicate=lambda _, m: isinstance(m, (nn.Linear, nn.Embedding))
                and m.weight.shape[-1] % 64 == 0)


def worker(impl: str, model_dir: Path, bits: int, prompt_tokens: int, gen_tokens: int, repeats: int) -> dict:
    """Runs inside a fresh process: load, quantize, warm up, time `repeats` generations."""
    sys.path.insert(0, str(ROOT))
    import mlx_model  # before mlx.core in both workers, so both use the same BLAS (mlx_model/blas.py)
    import mlx.core as mx

    prompt = mx.random.randint(3, 262144, (1, prompt_tokens), key=mx.random.key(1))
    if impl == "ours":
        model, _ = mlx_model.load(model_dir)
        quantize(model, bits)

        def run(n):
            return mlx_model.stream_generate(model, prompt[0], max_tokens=n)
    else:
        from mlx_vlm.generate.ar import generate_step
        from mlx_vlm.utils import load_model

        model = load_model(model_dir)
        quantize(model, bits)

        def run(n):
            return (int(t) for t, _ in generate_step(prompt, model, None, None, max_tokens=n, temperature=0.0))
    mx.eval(model.parameters())
    list(run(2))  # warm-up
    mx.reset_peak_memory()
    prefill, decode, tokens = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        first = None
        out = []
        for token in run(gen_tokens):
            if first is None:
                first = time.perf_counter()
            out.append(token)
        end = time.perf_counter()
        prefill.append(prompt_tokens / (first - start))
        decode.append((len(out) - 1) / (end - first))
        tokens = out
    return {"impl": impl, "prefill_tps": prefill, "decode_tps": decode, "tokens": tokens,
            "peak_memory_gib": mx.get_peak_memory() / 2**30,
            "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6, help="decoder layers (default 6: 5 sliding + 1 full)")
    parser.add_argument("--bits", type=int, default=4, choices=(4, 8))
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--gen-tokens", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "decode")
    parser.add_argument("--rounds", type=int, default=2, help="worker runs per implementation, in ABBA order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    parser.add_argument("--worker", choices=("ours", "mlx-vlm"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    model_dir = args.workdir / f"gemma4-12b-width-{args.layers}L"
    if args.worker:
        print(json.dumps(worker(args.worker, model_dir, args.bits, args.prompt_tokens, args.gen_tokens,
                                args.repeats)))
        return
    if not (model_dir / "model.safetensors").is_file():
        print(f"building random 12B-width checkpoint ({args.layers} layers) in {model_dir} ...", file=sys.stderr)
        build_checkpoint(model_dir, args.layers, args.seed)
    results: dict[str, dict] = {}
    order = []
    for r in range(args.rounds):  # ABBA order, so drift in the machine's load hits both alike
        order += [("ours", "mlx-vlm"), ("mlx-vlm", "ours")][r % 2]
    for impl in order:
        print(f"running {impl} ...", file=sys.stderr)
        cmd = [sys.executable, __file__, "--worker", impl, "--layers", str(args.layers), "--bits", str(args.bits),
               "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
               "--repeats", str(args.repeats), "--workdir", str(args.workdir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{impl} failed:\n{proc.stderr[-3000:]}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        if impl in results:
            for key in ("prefill_tps", "decode_tps"):
                results[impl][key] += run[key]
            for key in ("peak_memory_gib", "max_rss_gib"):
                results[impl][key] = max(results[impl][key], run[key])
        else:
            results[impl] = run

    summary = {"shape": f"12B widths, {args.layers} layers, {args.bits}-bit, prompt {args.prompt_tokens}, "
                        f"generate {args.gen_tokens}, {args.rounds} rounds x {args.repeats} repeats",
               "same_tokens": results["ours"]["tokens"] == results["mlx-vlm"]["tokens"]}
    for impl, r in results.items():
        summary[impl] = {"prefill_tps": statistics.median(r["prefill_tps"]),
                         "decode_tps": statistics.median(r["decode_tps"]),
                         "peak_memory_gib": r["peak_memory_gib"], "max_rss_gib": r["max_rss_gib"]}
    summary["ratio"] = {k: summary["ours"][k] / summary["mlx-vlm"][k] for k in ("prefill_tps", "decode_tps")}
    summary["ratio"]["peak_memory"] = summary["ours"]["peak_memory_gib"] / summary["mlx-vlm"]["peak_memory_gib"]

    print(f"\n{summary['shape']}")
    print(f"{'':10} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak GiB':>9} {'max RSS GiB':>12}")
    for impl in ("ours", "mlx-vlm"):
        s = summary[impl]
        print(f"{impl:10} {s['prefill_tps']:14.2f} {s['decode_tps']:13.2f} {s['peak_memory_gib']:9.2f} "
              f"{s['max_rss_gib']:12.2f}")
    r = summary["ratio"]
    print(f"{'ratio':10} {r['prefill_tps']:13.2f}x {r['decode_tps']:12.2f}x {r['peak_memory']:8.2f}x"
          f"   (ours / mlx-vlm; same greedy tokens: {summary['same_tokens']})")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
