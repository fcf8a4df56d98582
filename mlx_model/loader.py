"""Load a Gemma 4 checkpoint from a Hugging Face layout directory; quantize it; save an MLX checkpoint.

A directory holds `config.json` and `model.safetensors`, or shards listed in `model.safetensors.index.json`
(or named `model-*.safetensors`). Quantized checkpoints written by `save_model` carry a `quantization`
entry ({"bits", "group_size"}) in config.json and `.scales`/`.biases` tensors beside each quantized weight;
checkpoints of other MLX converters (per-layer bits, other modes) load too (see `quantization.py`).
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_model import gemma3
from mlx_model.config import ConfigError, load_config
from mlx_model.gemma4 import Model
from mlx_model.gguf import GGUFError, GGUFFile
from mlx_model.quantization import QuantizationError, quantizable, quantize_like_checkpoint

QUANT_GROUP_SIZE = 64
SUPPORTED_BITS = (4, 8)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja", "tokenizer.model")


class ModelLoadError(Exception):
    """A model directory that cannot be loaded; the message names the file or tensor at fault."""


def _check_safetensors(path: Path) -> list[str]:
    """Validate a safetensors file's header against its size; return its tensor names."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"{path} is truncated or empty ({size} bytes): not a safetensors file")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise ModelLoadError(f"{path} is truncated: header says {header_len} bytes, file has {size}")
            header = json.loads(f.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelLoadError(f"{path} has a corrupt header: not a safetensors file") from None
    data_len = size - 8 - header_len
    names = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        end = info.get("data_offsets", [0, 0])[1] if isinstance(info, dict) else 0
        if end > data_len:
            raise ModelLoadError(
                f"{path} is truncated: tensor {name!r} ends at byte {end} of the data but only {data_len} "
                "bytes are present (re-download or re-convert the checkpoint)"
            )
        names.append(name)
    return names


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index} is not a valid safetensors index ({exc})") from None
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{index} lists shard(s) that do not exist: {', '.join(missing)}")
        return files
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(model_dir.glob("model-*.safetensors"))
    if shards:
        return shards
    raise ModelLoadError(f"no weights in {model_dir}: expected model.safetensors or model.safetensors.index.json")


def load_weights(model_dir: Path) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for path in _weight_files(model_dir):
        _check_safetensors(path)
        try:
            weights.update(mx.load(str(path)))
        except Exception as exc:  # mlx's own reader failed on a file whose header looked sane
            raise ModelLoadError(f"cannot read {path}: {exc}") from None
    return weights


def quantize_model(model: nn.Module, bits: int, group_size: int = QUANT_GROUP_SIZE) -> nn.Module:
    """Quantize every Linear and embedding of a model or drafter (affine, `bits` per weight, groups of
    `group_size`) in place."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=lambda _p, m: quantizable(m, group_size))
    return model


def load_model(path: str | Path, *, dtype: mx.Dtype | None = None) -> tuple[Model, dict[str, Any]]:
    """Build the model described by `path/config.json` and load its weights; returns (model, raw config)."""
    model_dir = Path(path)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir} is not a directory (pass a Hugging Face-layout model directory)")
    try:
        if _model_type(model_dir) in gemma3.MODEL_TYPES:
            raw = json.loads((model_dir / "config.json").read_text())
            config, model_class = gemma3.Gemma3Config.from_dict(raw), gemma3.Model
        else:
            (config, raw), model_class = load_config(model_dir), Model
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from None
    model = model_class(config)
    _fill(model, model_class.sanitize(load_weights(model_dir), config), model_dir, dtype)
    return model, raw


def _model_type(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # load_config reports what is wrong with the file


def load_gguf(path: str | Path, *, dtype: mx.Dtype | None = None) -> tuple[Model, dict[str, Any], GGUFFile]:
    """Build a model from a llama.cpp GGUF file (Gemma 3 text models), its tensors dequantized to float32 (or
    `dtype`); returns (model, transformers-style config dict, the opened file for its tokenizer)."""
    path = Path(path)
    try:
        gguf = GGUFFile(path)
        if gguf.architecture != "gemma3":
            raise ModelLoadError(f"{path}: GGUF architecture {gguf.architecture!r} is not supported (gemma3)")
        raw, arrays = gemma3.from_gguf(gguf)
        config = gemma3.Gemma3Config.from_dict(raw)
    except (GGUFError, ConfigError) as exc:
        raise ModelLoadError(str(exc)) from None
    model = gemma3.Model(config)
    weights = gemma3.Model.sanitize({k: mx.array(v) for k, v in arrays}, config)
    _fill(model, weights, path, dtype)
    return model, raw, gguf


def _fill(module: nn.Module, weights: dict[str, mx.array], model_dir: Path, dtype: mx.Dtype | None) -> None:
    """Quantize `module` like the checkpoint (layer by layer, as its tensors are packed), check the tensors,
    load them."""
    try:
        quantize_like_checkpoint(module, weights)
    except QuantizationError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from None
    _check_tensors(module, weights, model_dir)
    if dtype is not None:
        weights = {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}
    module.load_weights(list(weights.items()), strict=True)
    mx.eval(module.parameters())
    module.eval()


def _check_tensors(model: nn.Module, weights: dict[str, mx.array], model_dir: Path) -> None:
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelLoadError(f"{model_dir}: checkpoint is missing tensor(s) {shown}")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        raise ModelLoadError(f"{model_dir}: checkpoint has tensor(s) this config does not use: {shown}")
    for name, value in weights.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ModelLoadError(
                f"{model_dir}: tensor {name!r} has shape {tuple(value.shape)}, the config expects "
                f"{tuple(expected[name].shape)}"
            )


def load_drafter(path: str | Path, *, dtype: mx.Dtype | None = None):
    """Load a `gemma4_unified_assistant` (MTP drafter) directory; quantized ones as `save_model` writes them."""
    from mlx_model.assistant import Drafter, load_assistant_config

    model_dir = Path(path)
    if model_dir.is_file():  # a GGUF file
        from mlx_model import gemma4_gguf

        return gemma4_gguf.load(model_dir, dtype=dtype)[0]
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir} is not a directory (pass the drafter's Hugging Face-layout directory)")
    try:
        config = load_assistant_config(model_dir)
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from None
    drafter = Drafter(config)
    _fill(drafter, Drafter.sanitize(load_weights(model_dir), config), model_dir, dtype)
    return drafter


def save_model(model: nn.Module, raw_config: dict[str, Any], dst: str | Path, *, bits: int | None = None,
               source_dir: str | Path | None = None) -> Path:
    """Write an MLX checkpoint (config.json + model.safetensors + tokenizer files copied from `source_dir`).

    The directory is written under a temporary name and renamed at the end, so a failure leaves nothing behind.
    """
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty; choose a new destination")

    def write(tmp: Path) -> None:
        config = dict(raw_config)
        config.pop("quantization", None)
        if bits is not None:
            config["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": bits}
        mx.save_safetensors(str(tmp / "model.safetensors"), dict(tree_flatten(model.parameters())),
                            metadata={"format": "mlx"})
        if source_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(source_dir) / name).is_file():
                    shutil.copy2(Path(source_dir) / name, tmp / name)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: marks it complete

    return write_atomically(dst, write)


def write_atomically(dst: Path, write: Callable[[Path], None]) -> Path:
    """Run `write` on the directory `dst`.partial and rename it to `dst` when it returns; remove it when it
    fails. Writers put config.json last, so a killed process leaves no directory that loads."""
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
