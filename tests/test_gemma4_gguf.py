"""Gemma 4 GGUF files made by llama.cpp's own converter (`convert_hf_to_gguf.py` from the llama.cpp sources that
the llama-cpp-python sdist vendors, fetched with pip) from random checkpoints, for the 12B-style model and its
assistant: they load and match the safetensors path, and the tokenizer rebuilt from the GGUF vocabulary gives
the ids of the checkpoint's tokenizer.json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_model
from tests.model_refs import build_reference, build_reference_drafter, text_config_kwargs

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
S, F = "sliding_attention", "full_attention"
VOCAB = 512
# Widths that are multiples of 32 (the GGUF block size), so Q8_0/Q4_0 quantize every matrix.
TARGET = text_config_kwargs(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, layer_types=[S, S, F],
                            num_hidden_layers=3, attention_k_eq_v=True, global_head_dim=32, head_dim=16,
                            num_global_key_value_heads=1, final_logit_softcapping=30.0)
ASSISTANT = text_config_kwargs(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               layer_types=[S, F], num_kv_shared_layers=2, global_head_dim=32, head_dim=16,
                               attention_k_eq_v=True, num_global_key_value_heads=1)
# Keys llama.cpp's converter reads without defaults; Google's config.json lists them all.
EXPLICIT = dict(moe_intermediate_size=None, expert_intermediate_size=None, hidden_size_per_layer_input=0,
                global_head_dim=32, num_global_key_value_heads=1)
TEXT = "def add(a, b):\n    return a + b  # adds, héllo wörld ☃ 😀\n\tprint(add(1, 2))  <|turn>user"


@pytest.fixture(scope="module")
def converter(tmp_path_factory) -> Path:
    """llama.cpp's convert_hf_to_gguf.py, unpacked from the llama-cpp-python sdist (downloaded once per run)."""
    cache = Path(os.environ.get("GEMMA_AGENT_TEST_CACHE") or "~/.cache/gemma-agent-tests").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    script = cache / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if not script.is_file():
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                               LLAMA_CPP_PYTHON, "-d", str(cache)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"cannot download the {LLAMA_CPP_PYTHON} sdist: {done.stderr[-300:]}")
        with tarfile.open(next(cache.glob("llama_cpp_python-0.3.36.tar.gz"))) as archive:
            members = [m for m in archive.getmembers()
                       if "/vendor/llama.cpp/" in m.name and ("conv" in m.name or "gguf-py" in m.name)]
            archive.extractall(cache, members=members, filter="data")
    return script


def spm_tokenizer(directory: Path) -> None:
    """A SentencePiece-style BPE tokenizer (spaces as "▁", byte fallback, Gemma's low special ids) with VOCAB
    entries, trained on real text: the kind llama.cpp's Gemma 4 converter reads."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    text = (json.__doc__ or "") + (shutil.__doc__ or "") + "def add(a, b):\n    return a + b\n" * 20
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials,
                                                         show_progress=False))
    assert tok.get_vocab_size() == VOCAB
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
         "extra_special_tokens": ["<|turn>", "<turn|>"]}))  # control tokens, as in Gemma's tokenizer_config


def write_full_config(directory: Path, text_key: str | None = "text_config") -> None:
    config = json.loads((directory / "config.json").read_text())
    config[text_key].update(EXPLICIT)
    (directory / "config.json").write_text(json.dumps(config, indent=1))


def run_converter(script: Path, src: Path, dst: Path, outtype: str) -> Path:
    result = subprocess.run([sys.executable, str(script), str(src), "--outfile", str(dst), "--outtype", outtype],
                            capture_output=True, text=True, timeout=600, cwd=script.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return dst


def requantize(src: Path, dst: Path, qtype) -> Path:
    """Copy a GGUF, quantizing each matrix whose rows split into blocks with the `gguf` package's quantizer."""
    from gguf.quants import quantize

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for tensor in reader.tensors:
        data = np.asarray(tensor.data, dtype=np.float32).reshape([int(d) for d in reversed(tensor.shape)])
        if data.ndim == 2 and data.shape[-1] % block == 0:
            writer.add_tensor(tensor.name, quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def target(tmp_path_factory, converter):
    src = tmp_path_factory.mktemp("target")
    spm_tokenizer(src)
    build_reference(src, TARGET, multimodal=True)
    write_full_config(src)
    out = tmp_path_factory.mktemp("target_gguf")
    files = {kind: run_converter(converter, src, out / f"{kind}.gguf", kind) for kind in ("f32", "f16", "q8_0")}
    files["q4_0"] = requantize(files["f32"], out / "q4_0.gguf", gguf.GGMLQuantizationType.Q4_0)
    files["q8_0_gguf_pkg"] = requantize(files["f32"], out / "q8_0_pkg.gguf", gguf.GGMLQuantizationType.Q8_0)
    return src, files


# Max |Δlogit| relative to the largest logit: float rounding for F32/F16, the quantizer's error for the rest.
TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "q8_0": 2e-2, "q8_0_gguf_pkg": 2e-2, "q4_0": 0.25}


@pytest.mark.parametrize("kind", list(TOLERANCE))
def test_target_gguf_matches_safetensors(target, kind):
    src, files = target
    reference, ref_tok = mlx_model.load(src, dtype=mx.float32)
    model, tok = mlx_model.load(files[kind], dtype=mx.float32)
    ids = mx.array([ref_tok.encode(TEXT)])
    a, b = np.array(reference(ids)), np.array(model(ids))
    assert np.abs(a - b).max() <= TOLERANCE[kind] * np.abs(a).max()
    if kind in ("f32", "f16", "q8_0"):
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9
    assert tok.encode(TEXT) == ref_tok.encode(TEXT)  # the vocabulary rebuilt from the GGUF
    assert tok.bos_id == 2 and tok.eos_ids == {1, ref_tok.token_to_id("<turn|>")}


def test_gguf_converts_to_a_quantized_mlx_checkpoint(target, tmp_path):
    src, files = target
    dst = mlx_model.convert_checkpoint(files["f16"], tmp_path / "q8", bits=8)
    model, tok = mlx_model.load(dst)
    expected, _ = mlx_model.load(files["f16"], dtype=mx.float32)
    mlx_model.quantize_model(expected, 8)
    assert tok is not None and tok.encode(TEXT) == mlx_model.load(src)[1].encode(TEXT)
    ids = mx.array([[5, 6, 7, 8, 9]])
    a, b = np.array(model(ids).astype(mx.float32)), np.array(expected(ids))
    assert np.abs(a - b).max() <= 0.02 * np.abs(b).max()


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, converter, target):
    src = tmp_path_factory.mktemp("assistant")
    build_reference_drafter(src, ASSISTANT, backbone_hidden=TARGET["hidden_size"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(target[0] / name, src / name)
    write_full_config(src)
    out = tmp_path_factory.mktemp("assistant_gguf")
    files = {kind: run_converter(converter, src, out / f"{kind}.gguf", kind) for kind in ("f32", "f16")}
    files["q4_0"] = requantize(files["f32"], out / "q4_0.gguf", gguf.GGMLQuantizationType.Q4_0)
    return src, files


@pytest.mark.parametrize("kind,tolerance", [("f32", 0.0), ("f16", 1e-3), ("q4_0", 0.2)])
def test_assistant_gguf_matches_safetensors(assistant, kind, tolerance):
    src, files = assistant
    reference = dict(tree_flatten(mlx_model.load_drafter(src, dtype=mx.float32).parameters()))
    loaded = dict(tree_flatten(mlx_model.load_drafter(files[kind], dtype=mx.float32).parameters()))
    assert set(loaded) == set(reference)
    for name, value in reference.items():
        error = float(mx.abs(loaded[name] - value).max())
        assert error <= tolerance * max(1.0, float(mx.abs(value).max())), name


def test_ollama_model_runs_through_generate(target, tmp_path):
    from tests.test_weights_sources import fake_ollama, run_cli

    src, files = target
    fake_ollama(tmp_path / "ollama", "gemma4", "tiny", files["q8_0"].read_bytes())
    env = {"OLLAMA_MODELS": str(tmp_path / "ollama"), "GEMMA_AGENT_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = ["generate", "--model", "ollama:gemma4:tiny", "--prompt", "def add", "--max-tokens", "4", "--raw"]
    first = run_cli(args, env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "converting" in first.stderr and "loaded " in first.stderr and "peak memory" in first.stderr
    again = run_cli(args, env, tmp_path)
    assert again.returncode == 0 and "converting" not in again.stderr and again.stdout == first.stdout
