"""Streaming conversion of a checkpoint directory to an MLX checkpoint, tensor by tensor.

The source is read lazily (`mx.load` maps nothing into memory until a tensor is evaluated), every output tensor
is described (name, dtype, shape) before any is computed, and the safetensors file is written one tensor at a
time: peak memory follows the largest tensor, not the checkpoint. The result appears under its final name only
when complete; `config.json` is written last, so an interrupted conversion leaves no directory that loads.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_model.config import ConfigError, load_config
from mlx_model.loader import (QUANT_GROUP_SIZE, SUPPORTED_BITS, TOKENIZER_FILES, ModelLoadError, _check_tensors,
                              load_weights, write_atomically)
from mlx_model.quantization import QuantizationError, quantizable, quantize_like_checkpoint

# safetensors' dtype names (https://huggingface.co/docs/safetensors, "Format").
_DTYPE_NAMES = {mx.bool_: "BOOL", mx.uint8: "U8", mx.int8: "I8", mx.uint16: "U16", mx.int16: "I16",
                mx.uint32: "U32", mx.int32: "I32", mx.uint64: "U64", mx.int64: "I64", mx.float16: "F16",
                mx.bfloat16: "BF16", mx.float32: "F32"}


def write_safetensors(path: Path, tensors: dict[str, mx.array], metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[str], None] | None = None) -> None:
    """Write lazily computed `tensors` to one safetensors file, evaluating and releasing them one at a time
    (the dict is emptied as it goes)."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    names = list(tensors)
    for name in names:
        value = tensors[name]
        size = value.size * value.itemsize
        header[name] = {"dtype": _DTYPE_NAMES[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name in names:
            value = tensors.pop(name)
            mx.eval(value)
            f.write(memoryview(value))
            del value
            mx.clear_cache()
            if on_tensor is not None:
                on_tensor(name)


def _skeleton(src: Path) -> tuple[nn.Module, dict[str, mx.array], dict[str, Any]]:
    """The unmaterialized module a checkpoint directory describes, its lazily loaded tensors in our names, and
    its raw config."""
    from mlx_model.assistant import Drafter, load_assistant_config
    from mlx_model.gemma4 import Model

    try:
        raw = json.loads((src / "config.json").read_text())
        if raw.get("model_type") == "gemma4_unified_assistant":
            config = load_assistant_config(src)
            module = Drafter(config)
            return module, Drafter.sanitize(load_weights(src), config), raw
        config, raw = load_config(src)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError; so is a JSON syntax error
        raise ModelLoadError(str(exc) if isinstance(exc, ConfigError) else f"{src}/config.json: {exc}") from None
    return Model(config), Model.sanitize(load_weights(src), config), raw


def convert_checkpoint(src: str | Path, dst: str | Path, *, bits: int | None = None, dtype: mx.Dtype | None = None,
                       on_tensor: Callable[[str], None] | None = None) -> Path:
    """Convert the model or drafter directory `src` into an MLX checkpoint at `dst` (optionally quantized to
    `bits`, affine, group size 64; unquantized floats cast to `dtype`). Returns `dst`."""
    src, dst = Path(src), Path(dst)
    if bits is not None and bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not empty; choose a new destination")
    if src.is_file() and _is_gemma3_gguf(src):
        _convert_gemma3_gguf(src, dst, bits, dtype)
        return dst
    if src.is_file():
        return write_atomically(dst, lambda tmp: _write_from_gguf(src, tmp, bits, dtype, on_tensor))
    if not src.is_dir():
        raise ModelLoadError(f"{src} is not a directory (pass a Hugging Face-layout model directory)")
    module, weights, raw = _skeleton(src)
    try:
        quantize_like_checkpoint(module, weights)
    except QuantizationError as exc:
        raise ModelLoadError(f"{src}: {exc}") from None
    _check_tensors(module, weights, src)
    targets = set()
    if bits is not None:
        targets = {path for path, layer in module.named_modules()
                   if quantizable(layer, QUANT_GROUP_SIZE) and f"{path}.scales" not in weights}
    del module
    outputs = _outputs(weights, targets, bits, dtype)
    config = dict(raw)
    if bits is not None:
        config["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": bits}
    elif "quantization" not in raw:
        config.pop("quantization", None)


    def write(tmp: Path) -> None:
        write_safetensors(tmp / "model.safetensors", outputs, {"format": "mlx"}, on_tensor)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: marks it complete

    return write_atomically(dst, write)


def _is_gemma3_gguf(src: Path) -> bool:
    from mlx_model.gemma3 import MODEL_TYPES
    from mlx_model.gguf import GGUFError, GGUFFile

    try:
        return GGUFFile(src).architecture in MODEL_TYPES
    except GGUFError:
        return False  # the Gemma 4 path reports what is wrong with the file


def _convert_gemma3_gguf(src: Path, dst: Path, bits: int | None, dtype: mx.Dtype | None) -> None:
    """A Gemma 3 text model's GGUF: dequantized whole (small models), optionally re-quantized, its tokenizer rebuilt
    from the GGUF vocabulary; save_model writes atomically."""
    import tempfile

    from mlx_model.loader import load_gguf, quantize_model, save_model

    model, raw_config, gguf = load_gguf(src, dtype=dtype)
    if bits:
        quantize_model(model, bits)
    with tempfile.TemporaryDirectory(prefix="gemma-agent-tokenizer-") as tokenizer_dir:
        gguf.save_tokenizer(tokenizer_dir)
        save_model(model, raw_config, dst, bits=bits, source_dir=tokenizer_dir)


def _write_from_gguf(src: Path, tmp: Path, bits: int | None, dtype: mx.Dtype | None,
                     on_tensor: Callable[[str], None] | None) -> None:
    """A Gemma 4 GGUF as an MLX checkpoint: tensors dequantized one at a time and written in shards of one
    layer, the tokenizer and chat template from the file's vocabulary."""
    from mlx_model import gemma4_gguf
    from mlx_model.gguf import GGUFError

    try:
        gguf = gemma4_gguf.open_gemma4(src)
        raw = gemma4_gguf.raw_config(gguf)
        tokenizer = gemma4_gguf.tokenizer(gguf)
    except (GGUFError, ConfigError) as exc:
        raise ModelLoadError(str(exc)) from None
    shards: dict[str, dict[str, mx.array]] = {}
    for name, value in gemma4_gguf.tensors(gguf):
        parts = name.split(".")
        shard = parts[2] if parts[:2] == ["model", "layers"] else "rest"
        array = mx.array(value).astype(dtype or mx.bfloat16)
        path = name.rsplit(".", 1)[0]
        if bits is not None and name.endswith(".weight") and array.ndim == 2 and not path.endswith("norm") \
                and array.shape[-1] % QUANT_GROUP_SIZE == 0:
            packed, scales, biases = mx.quantize(array, QUANT_GROUP_SIZE, bits)
            shards.setdefault(shard, {}).update({name: packed, f"{path}.scales": scales, f"{path}.biases": biases})
        else:
            shards.setdefault(shard, {})[name] = array
        if shard != "rest" and len(shards) > 1:  # a layer is complete when the next one starts
            _flush(tmp, shards, keep=shard)
        if on_tensor is not None:
            on_tensor(name)
    _flush(tmp, shards, keep=None)
    tokenizer.backend.save(str(tmp / "tokenizer.json"))
    settings = {"bos_token": tokenizer.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else None,
                "eos_token": gguf.special_token_ids.get("eos") is not None
                and tokenizer.id_to_token(gguf.special_token_ids["eos"]) or None}
    (tmp / "tokenizer_config.json").write_text(json.dumps(settings))
    if gguf.chat_template:
        (tmp / "chat_template.jinja").write_text(gguf.chat_template)
    if bits is not None:
        raw["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": bits}
    (tmp / "config.json").write_text(json.dumps(raw, indent=2) + "\n")  # last: marks it complete


def _flush(tmp: Path, shards: dict[str, dict[str, mx.array]], keep: str | None) -> None:
    """Write every pending shard except `keep` as its own safetensors file; update the index."""
    index_path = tmp / "model.safetensors.index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"weight_map": {}}
    for shard in [s for s in shards if s != keep]:
        tensors = shards.pop(shard)
        filename = f"model-{len(set(index['weight_map'].values())) + 1:05d}.safetensors"
        mx.save_safetensors(str(tmp / filename), tensors, metadata={"format": "mlx"})
        index["weight_map"].update(dict.fromkeys(tensors, filename))
        mx.clear_cache()
    index_path.write_text(json.dumps(index))


def _outputs(weights: dict[str, mx.array], targets: set[str], bits: int | None,
             dtype: mx.Dtype | None) -> dict[str, mx.array]:
    """The output tensors, still lazy: `targets` quantized, other floats cast to `dtype`. Empties `weights`."""
    outputs: dict[str, mx.array] = {}
    for name in list(weights):
        value = weights.pop(name)
        if dtype is not None and mx.issubdtype(value.dtype, mx.floating):
            value = value.astype(dtype)
        path = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and path in targets:
            packed, scales, biases = mx.quantize(value, QUANT_GROUP_SIZE, bits)
            outputs.update({name: packed, f"{path}.scales": scales, f"{path}.biases": biases})
        else:
            outputs[name] = value
    return outputs
