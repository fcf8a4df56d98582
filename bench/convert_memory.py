"""Peak memory of `gemma-agent convert --bits 4` as the checkpoint grows: streaming keeps it at the largest tensor.

Writes random bf16 checkpoints at Gemma 4 12B widths (hidden 3840, MLP 15360, 16 query heads, vocabulary 262144,
5 sliding : 1 full layers, multimodal `model.language_model.*` names) with each `--layers` count, then runs
`gemma-agent convert SRC DST --bits 4` on each in a fresh process and reads that process's peak RSS. The peer, in
the same run, is the whole-model path (load every tensor, quantize in memory, save) on `--peer-layers` (streaming
runs there too): it holds the checkpoint in memory, so at 12 layers it would need more than a process may take
on this shared machine.
Prints a table with ratios to the first streaming row, and JSON with --json.

Reproduce (about 5 minutes and 17 GB of temporary disk on 2 CPU cores):
    python bench/convert_memory.py --layers 6 12 --peer-layers 2 --json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_12B = dict(hidden_size=3840, intermediate_size=15360, num_attention_heads=16, num_key_value_heads=8,
                head_dim=256, global_head_dim=512, num_global_key_value_heads=1, attention_k_eq_v=True,
                vocab_size=262144, sliding_window=1024, final_logit_softcapping=30.0, model_type="gemma4_unified_text")


def _random_bf16(shape: tuple[int, ...], rng):
    """Random bf16 values of magnitude 1/8 to 1/4 and random sign, drawn as bit patterns (fast; no inf/NaN)."""
    import mlx.core as mx
    import numpy as np

    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16) & np.uint16(0x807F) | np.uint16(0x3E00)
    return mx.array(bits).view(mx.bfloat16)


def write_checkpoint(path: Path, layers: int) -> int:
    """A random bf16 checkpoint of `layers` 12B-width layers, sharded like Google's (one shard per layer, plus
    one for the embedding and norm) so that writing it never holds more than a shard; returns its bytes."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    sys.path.insert(0, str(ROOT))
    from mlx_model.config import TextConfig
    from mlx_model.gemma4 import Model

    text = dict(TEXT_12B, num_hidden_layers=layers)
    raw = {"model_type": "gemma4_unified", "architectures": ["Gemma4UnifiedForConditionalGeneration"],
           "text_config": text, "tie_word_embeddings": True}
    shards: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, value in tree_flatten(Model(TextConfig.from_dict(text)).parameters()):
        shard = f"layer{int(name.split('.')[2]):03d}" if name.startswith("model.layers.") else "embed"
        shards.setdefault(shard, {})[name.replace("model.", "model.language_model.", 1)] = value.shape
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    weight_map = {}
    for index, (shard, shapes) in enumerate(sorted(shards.items())):
        filename = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(path / filename), {n: _random_bf16(s, rng) for n, s in shapes.items()})
        weight_map.update(dict.fromkeys(shapes, filename))
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(raw))
    return sum(f.stat().st_size for f in path.iterdir())


def whole_model_convert(src: str, dst: str) -> None:
    """The peer: the in-memory path (every tensor loaded, quantized, then saved)."""
    sys.path.insert(0, str(ROOT))
    import mlx_model

    model, raw = mlx_model.load_model(src)
    mlx_model.quantize_model(model, 4)
    mlx_model.save_model(model, raw, dst, bits=4)


def peak_rss(command: list[str]) -> tuple[float, float]:
    """(peak RSS in GiB, seconds) of one command in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{command} failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 2**20, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--peer-layers", type=int, nargs="*", default=[2])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        whole_model_convert(*args.worker)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="convert-memory-", dir=os.environ.get("BENCH_TMP")) as tmp:
        for layers in sorted(set(args.layers) | set(args.peer_layers)):
            src = Path(tmp) / f"src{layers}"
            size = write_checkpoint(src, layers)
            runs = [("streaming", [sys.executable, "-m", "agent.cli", "convert", str(src), f"{tmp}/q{layers}",
                                   "--bits", "4"])]
            if layers in args.peer_layers:
                runs.append(("whole-model", [sys.executable, __file__, "--worker", str(src), f"{tmp}/w{layers}"]))
            for method, command in runs:
                rss, seconds = peak_rss(command)
                rows.append({"method": method, "layers": layers, "checkpoint_gib": size / 2**30,
                             "peak_rss_gib": rss, "seconds": seconds})
            for leftover in Path(tmp).iterdir():
                shutil.rmtree(leftover)
    base = next(r for r in rows if r["method"] == "streaming")
    print(f"{'method':<12} {'layers':>6} {'checkpoint GiB':>15} {'peak RSS GiB':>13} {'vs first':>9} {'s':>7}")
    for r in rows:
        r["ratio"] = r["peak_rss_gib"] / base["peak_rss_gib"]
        print(f"{r['method']:<12} {r['layers']:>6} {r['checkpoint_gib']:>15.2f} {r['peak_rss_gib']:>13.2f} "
              f"{r['ratio']:>8.2f}x {r['seconds']:>7.1f}")
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
