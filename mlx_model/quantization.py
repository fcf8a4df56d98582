"""How a checkpoint's layers are quantized, read from the tensors themselves, and how to quantize ours.

MLX checkpoints (ours, `mlx_lm.convert`, `mlx_vlm.convert`) keep a quantized layer as `weight` (packed uint32),
`scales` and, in the affine mode, `biases`. `config.json`'s `quantization` entry gives the defaults and may name
single layers with other settings ("mixed" recipes such as `mixed_4_6`); those names follow the converting tool's
module tree, not ours, so each layer's bits, group size and mode are recovered from its tensor shapes and dtypes,
which cannot disagree with the data.
"""
from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

# Modes of `mx.quantize` besides "affine", with the one (bits, group size) each allows; their scales are uint8
# and they have no biases (MLX's documentation of `mx.quantize`).
FIXED_MODES = {(4, 32): "mxfp4", (4, 16): "nvfp4", (8, 32): "mxfp8"}


class QuantizationError(ValueError):
    """Tensors whose packing this port cannot rebuild."""


def layer_params(path: str, in_dims: int, weights: dict[str, mx.array]) -> dict[str, Any]:
    """(bits, group_size, mode) of the quantized layer `path` whose unquantized input width is `in_dims`."""
    packed, scales = weights[f"{path}.weight"], weights[f"{path}.scales"]
    bits, remainder = divmod(packed.shape[-1] * 32, in_dims)
    if remainder or scales.shape[-1] == 0 or in_dims % scales.shape[-1]:
        raise QuantizationError(f"tensor {path!r}: packed shape {tuple(packed.shape)} and scales "
                                f"{tuple(scales.shape)} do not fit an input width of {in_dims}")
    group_size = in_dims // scales.shape[-1]
    if f"{path}.biases" in weights:
        return {"bits": bits, "group_size": group_size, "mode": "affine"}
    mode = FIXED_MODES.get((bits, group_size))
    if mode is None:
        raise QuantizationError(f"tensor {path!r}: {bits} bits in groups of {group_size} without biases is not a "
                                "quantization mode MLX knows")
    return {"bits": bits, "group_size": group_size, "mode": mode}


def quantize_like_checkpoint(module: nn.Module, weights: dict[str, mx.array]) -> None:
    """Swap each layer of `module` that the checkpoint stores quantized for a quantized layer of the same
    packing (uniform or per-layer bits, any mode)."""
    quantized = {name[: -len(".scales")] for name in weights if name.endswith(".scales")}
    if not quantized:
        return

    def predicate(path: str, layer: nn.Module) -> bool | dict[str, Any]:
        if path not in quantized or not hasattr(layer, "to_quantized"):
            return False
        return layer_params(path, layer.weight.shape[-1], weights)

    nn.quantize(module, class_predicate=predicate)


def quantizable(layer: nn.Module, group_size: int) -> bool:
    """Layers quantized on request: every Linear and Embedding whose input width splits into groups."""
    return isinstance(layer, (nn.Linear, nn.Embedding)) and layer.weight.shape[-1] % group_size == 0
