"""The target's forward (decode, verify and prefill steps) with the work between cache accesses compiled.

A Gemma 4 layer is a few matmuls and some thirty small element-wise ops (sandwich norms, GELU, residuals, q/k/v
norms, RoPE, the layer scalar); built op by op, a 48-layer decode step is well over a thousand graph nodes,
which costs as much as the arithmetic on an accelerator at batch 1. Here everything between one layer's
attention and the next layer's cache write (finishing layer i, then the queries, keys and values of layer
i + 1) is one function compiled by `mx.compile` (fused element-wise kernels, traced once per input shape); the
caches' `append` / `attend` stay eager (page bookkeeping in Python). The position goes in as an array, so one
trace serves every position. Greedy tokens equal the eager forward's (tests/test_compiled_step.py).

`GEMMA_AGENT_COMPILE=0` turns it off (the eager `Model.hidden_states`), e.g. to compare the two.
"""
from __future__ import annotations

import os

import mlx.core as mx

from mlx_model.cache import ModelCache
from mlx_model.gemma4 import Model

ENV_VAR = "GEMMA_AGENT_COMPILE"


def hidden_states(model, input_ids: mx.array, cache: ModelCache) -> mx.array:
    """`model.hidden_states(input_ids, cache)`, through the compiled steps for our Gemma 4 `Model` (exactly that
    class: subclasses such as Gemma 3's have layers of their own, whose pieces these steps do not know)."""
    if os.environ.get(ENV_VAR, "1") == "0" or type(model) is not Model:
        return model.hidden_states(input_ids, cache)
    steps = getattr(model, "_compiled_steps", None)
    if steps is None:
        steps = model._compiled_steps = CompiledSteps(model)
    return steps(input_ids, cache)


class CompiledSteps:
    """Compiled pieces of one model's forward, with its parameters as tracked inputs."""

    def __init__(self, model: Model):
        self.text = text = model.model
        last = len(text.layers) - 1

        def compiled(fn):
            return mx.compile(fn, inputs=model.state)

        self.enter = compiled(lambda ids, position: self._project(0, text.embed(ids), position))
        self.between = [compiled(lambda h, attended, position, i=i:
                                 self._project(i + 1, self._finish(i, h, attended), position))
                        for i in range(last)]
        self.leave = compiled(lambda h, attended: text.norm(self._finish(last, h, attended)))

    def _finish(self, i: int, h: mx.array, attended: mx.array) -> mx.array:
        layer = self.text.layers[i]
        return layer.after_attention(h, layer.self_attn.output(attended))

    def _project(self, i: int, h: mx.array, position: mx.array) -> tuple[mx.array, ...]:
        """(h, queries) of layer i for its input h, plus (keys, values) when the layer has its own K/V."""
        layer = self.text.layers[i]
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        if attn.spec.kv_source is not None:
            return h, attn.queries(x, position)
        return (h, attn.queries(x, position), *attn.keys_values(x, position))

    def __call__(self, input_ids: mx.array, cache: ModelCache) -> mx.array:
        offset = cache.offset
        position = mx.array(offset, dtype=mx.int32)
        out = self.enter(input_ids, position)
        layers = self.text.layers
        for i, layer in enumerate(layers):
            h, queries, *keys_values = out
            source = layer.self_attn.spec.kv_source
            layer_cache = cache[i if source is None else source]
            if keys_values:
                layer_cache.append(*keys_values)
            attended = layer_cache.attend(queries, offset)
            out = self.between[i](h, attended, position) if i + 1 < len(layers) else self.leave(h, attended)
        return out
