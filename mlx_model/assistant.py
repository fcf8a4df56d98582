"""The Gemma 4 MTP drafter (`gemma4_unified_assistant`) in MLX.

Mirrors transformers 5.23 `Gemma4UnifiedAssistantForCausalLM`. The drafter has no K/V projections: every layer
reads the target's keys/values (its last full-attention and last sliding layer, whatever the target's
`num_kv_shared_layers` says). Its input is [target embedding of the last token ; a backbone-sized hidden state]
(the target's last hidden state for the first draft step, then the drafter's own post-projected state), all at
one constant position. Logits come from the tied head or, with `use_ordered_embeddings`, from the centroid
"masked embedder" (only the tokens of the top-k centroids get real logits).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import mlx.core as mx
import mlx.nn as nn

from mlx_model.cache import attention
from mlx_model.config import FULL, SLIDING, ConfigError, TextConfig
from mlx_model.gemma4 import DecoderLayer, RMSNorm
from mlx_model.paged_cache import online_softmax_attention

EXTERNAL_KV = -1  # LayerSpec.kv_source of a drafter layer: its K/V come from the target model


class KVReader(Protocol):
    def attend(self, queries: mx.array, q_offset: int, scale: float = 1.0) -> mx.array: ...


@dataclass
class AssistantConfig:
    text: TextConfig
    backbone_hidden_size: int = 3840
    use_ordered_embeddings: bool = False
    num_centroids: int = 2048
    centroid_intermediate_top_k: int = 32

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "AssistantConfig":
        if raw.get("model_type") != "gemma4_unified_assistant":
            raise ConfigError(f"unsupported drafter model_type {raw.get('model_type')!r}; expected "
                              "'gemma4_unified_assistant'")
        text_raw = dict(raw.get("text_config") or {})
        if not text_raw:
            raise ConfigError("a gemma4_unified_assistant config needs a 'text_config' object")
        text_raw.setdefault("model_type", "gemma4_unified_text")
        # Every drafter layer reads the target's KV; parse the layers as unshared, then mark them external.
        text_raw["num_kv_shared_layers"] = 0
        text = TextConfig.from_dict(text_raw)
        widen = 2 if text.use_double_wide_mlp else 1
        text.layers = [dataclasses.replace(spec, kv_source=EXTERNAL_KV, k_eq_v=False,
                                           intermediate_size=text.intermediate_size * widen)
                       for spec in text.layers]
        config = cls(text, int(raw.get("backbone_hidden_size", 3840)), bool(raw.get("use_ordered_embeddings")),
                     int(raw.get("num_centroids", 2048)), int(raw.get("centroid_intermediate_top_k", 32)))
        if config.use_ordered_embeddings and text.vocab_size % config.num_centroids:
            raise ConfigError("vocab_size must be a multiple of num_centroids for the masked embedder")
        return config


class MaskedEmbedder(nn.Module):
    """Scores only the tokens of the `top_k` best centroids; every other token gets (lowest score - 1)."""

    def __init__(self, config: AssistantConfig):
        super().__init__()
        hidden = config.text.hidden_size
        self.top_k = config.centroid_intermediate_top_k
        self.num_centroids = config.num_centroids
        self.per_centroid = config.text.vocab_size // config.num_centroids
        self.centroids = nn.Linear(hidden, config.num_centroids, bias=False)
        self.token_ordering = mx.zeros((config.text.vocab_size,), dtype=mx.int32)

    def __call__(self, hidden: mx.array, embed: nn.Module) -> mx.array:
        batch, length, _ = hidden.shape
        vocab = self.num_centroids * self.per_centroid
        scores = self.centroids(hidden)
        top = mx.argpartition(-scores, self.top_k - 1, axis=-1)[..., : self.top_k]  # [B, L, top_k]
        clusters = self.token_ordering.reshape(self.num_centroids, self.per_centroid)
        tokens = clusters[top].reshape(batch, length, -1)  # canonical token ids, [B, L, top_k * per_centroid]
        rows = embed(tokens)  # head rows of those tokens, [B, L, n, hidden]
        selected = (rows @ hidden[..., None]).squeeze(-1).astype(mx.float32)
        floor = selected.min() - 1.0
        logits = mx.full((batch * length, vocab), floor, dtype=mx.float32)
        flat_rows = mx.arange(batch * length)[:, None]
        logits[flat_rows, tokens.reshape(batch * length, -1)] = selected.reshape(batch * length, -1)
        return logits.reshape(batch, length, vocab)


class DrafterBody(nn.Module):
    def __init__(self, text: TextConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(text.vocab_size, text.hidden_size)  # the tied head
        self.layers = [DecoderLayer(text, spec) for spec in text.layers]
        self.norm = RMSNorm(text.hidden_size, text.rms_norm_eps)


class Drafter(nn.Module):
    """`drafter(inputs, position, kv)` -> (logits [B, L, vocab], next hidden input [B, L, backbone_hidden])."""

    def __init__(self, config: AssistantConfig):
        super().__init__()
        self.config = config
        text = config.text
        self.model = DrafterBody(text)
        self.pre_projection = nn.Linear(2 * config.backbone_hidden_size, text.hidden_size, bias=False)
        self.post_projection = nn.Linear(text.hidden_size, config.backbone_hidden_size, bias=False)
        if config.use_ordered_embeddings:
            self.masked_embedding = MaskedEmbedder(config)
        if not text.tie_word_embeddings:
            self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self._steps: _CompiledSteps | None = None

    def __call__(self, inputs: mx.array, position: int,
                 kv: Mapping[str, KVReader]) -> tuple[mx.array, mx.array]:
        """`inputs` = [target embedding ; hidden] of the last token; `kv[layer_type]` gives the target's K/V.

        Everything between the reads of the target's K/V runs as compiled functions (MLX fuses their
        element-wise work; a draft step of the trained 1-layer drafter here: 0.39 -> 0.25 ms). The position
        goes in as an array, so one compilation serves every position."""
        if self._steps is None:
            self._steps = _CompiledSteps(self)
        layers = self.model.layers
        where = mx.array(position, dtype=mx.int32)
        h, queries = self._steps.enter(inputs, where)
        for i, layer in enumerate(layers):
            attended = kv[layer.self_attn.spec.attention].attend(queries, position)
            if i + 1 < len(layers):
                h, queries = self._steps.between[i](h, attended, where)
        return self._steps.leave(h, attended)

    def _enter(self, inputs: mx.array, position: mx.array) -> tuple[mx.array, mx.array]:
        h = self.pre_projection(inputs)
        return h, self._queries(0, h, position)

    def _between(self, i: int, h: mx.array, attended: mx.array, position: mx.array) -> tuple[mx.array, mx.array]:
        """Finish layer i from its attention results; the queries of layer i + 1."""
        layer = self.model.layers[i]
        h = layer.after_attention(h, layer.self_attn.output(attended))
        return h, self._queries(i + 1, h, position)

    def _leave(self, h: mx.array, attended: mx.array) -> tuple[mx.array, mx.array]:
        layer = self.model.layers[-1]
        h = self.model.norm(layer.after_attention(h, layer.self_attn.output(attended)))
        return self.logits(h), self.post_projection(h)

    def _queries(self, i: int, h: mx.array, position: mx.array) -> mx.array:
        layer = self.model.layers[i]
        return layer.self_attn.queries(layer.input_layernorm(h), position)

    def logits(self, hidden: mx.array) -> mx.array:
        """Raw head scores (the drafter applies no softcap, as in transformers)."""
        if self.config.use_ordered_embeddings:
            return self.masked_embedding(hidden, self.model.embed_tokens)
        if self.config.text.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(hidden).astype(mx.float32)
        return self.lm_head(hidden).astype(mx.float32)

    @staticmethod
    def sanitize(weights: dict[str, mx.array], config: AssistantConfig) -> dict[str, mx.array]:
        out = {}
        for name, value in weights.items():
            if "rotary_emb" in name or (name.startswith("lm_head.") and config.text.tie_word_embeddings):
                continue
            if name.endswith("token_ordering"):
                value = value.astype(mx.int32)
            out[name] = value
        return out


class _CompiledSteps:
    """The drafter's pieces between K/V reads, compiled with its parameters as tracked inputs (so weight
    updates and quantization are seen)."""

    def __init__(self, drafter: Drafter):
        def compiled(fn):
            return mx.compile(fn, inputs=drafter.state)

        self.enter = compiled(drafter._enter)
        self.between = [compiled(lambda h, a, p, i=i: drafter._between(i, h, a, p))
                        for i in range(len(drafter.model.layers) - 1)]
        self.leave = compiled(drafter._leave)


class SharedKV:
    """Explicit target K/V arrays [batch, kv_heads, tokens, head_dim] as a drafter layer sees them.

    transformers' assistant masks are bidirectional over the shared KV: full layers see every entry, sliding
    layers the last `window + 1` entries (its sliding overlay admits distances <= window).
    """

    def __init__(self, keys: mx.array, values: mx.array, visible: int | None = None):
        self.keys, self.values, self.visible = keys, values, visible

    def attend(self, queries: mx.array, q_offset: int, scale: float = 1.0) -> mx.array:
        keys, values = self.keys, self.values
        if self.visible is not None:
            keys, values = keys[..., -self.visible:, :], values[..., -self.visible:, :]
        return attention(queries, keys, values, scale)


class TargetCacheView:
    """A target layer cache as the drafter reads it: a draft at position p sees the target tokens before p
    (the token at p is the one being drafted from; the target has not processed it yet), sliding layers the
    last `window` of them — the same entries transformers' bidirectional mask admits, without the stale
    K/V of a rejected candidate that transformers leaves at position p.

    Every draft step of a round asks the same question (one query at p, same cache), so the keys, values and
    mask are gathered once (with keys-as-values pages, that is the key rebuild) and reused: make a new view for
    each round, after the target's cache has changed. Past one attention chunk (paged caches), the chunks'
    rebuilt keys and values are gathered once per round too, up to GATHER_TOKENS of context (at 16K tokens,
    bench/mtp_curve.py's tiny-width pair: a drafter step cost 1.25 target steps; the full layer's reads of a
    4-step round take 0.54x the time gathered, median of 7 paired repeats)."""

    GATHER_TOKENS = 65536  # 128 MiB of bf16 K/V for a 12B full layer (1 KV head x 512)

    def __init__(self, layer_cache):
        self.layer_cache = layer_cache
        self._inputs: tuple | None = None
        self._segments: list | None = None
        self._position: int | None = None

    def attend(self, queries: mx.array, q_offset: int, scale: float = 1.0) -> mx.array:
        # The cache's own mask for a query at p - 1 admits keys p - window .. p - 1.
        if queries.shape[2] != 1:
            return self.layer_cache.attend(queries, q_offset - 1, scale)
        if self._position != q_offset:
            self._inputs = self.layer_cache.attention_inputs(q_offset - 1, queries)
            self._segments = None
            if self._inputs is None and self.layer_cache.offset <= self.GATHER_TOKENS:
                self._segments = self.layer_cache.gathered_segments(queries)
            self._position = q_offset
        if self._inputs is None:  # a paged context longer than one attention chunk
            if self._segments is None:
                return self.layer_cache.attend(queries, q_offset - 1, scale)
            return online_softmax_attention(queries, iter(self._segments), q_offset - 1, scale)
        keys, values, mask = self._inputs
        return attention(queries, keys, values, scale, mask)


def target_kv_sources(target_config: TextConfig) -> dict[str, int]:
    """Index of the target's last layer of each attention type that computes its own K/V."""
    sources = {}
    for index, spec in enumerate(target_config.layers):
        if spec.kv_source is None:
            sources[spec.attention] = index
    missing = {FULL, SLIDING} - set(sources)
    if missing:
        raise ConfigError(f"the target has no layer of type(s) {sorted(missing)} for the drafter to read")
    return sources


def check_pair(target_config: TextConfig, drafter: Drafter) -> None:
    """Raise ConfigError when the drafter cannot read this target's KV or embeddings."""
    dc = drafter.config
    problems = []
    if dc.backbone_hidden_size != target_config.hidden_size:
        problems.append(f"backbone_hidden_size {dc.backbone_hidden_size} != target hidden {target_config.hidden_size}")
    if dc.text.vocab_size != target_config.vocab_size:
        problems.append(f"vocab {dc.text.vocab_size} != target vocab {target_config.vocab_size}")
    for layer_type in (FULL, SLIDING):
        mine = [s.head_dim for s in dc.text.layers if s.attention == layer_type]
        theirs = {s.head_dim for s in target_config.layers if s.attention == layer_type and s.kv_source is None}
        if mine and (not theirs or set(mine) - theirs):
            problems.append(f"{layer_type} head dim {mine[0]} not produced by the target ({sorted(theirs)})")
    if dc.text.sliding_window != target_config.sliding_window:
        problems.append(f"sliding_window {dc.text.sliding_window} != target {target_config.sliding_window}")
    if problems:
        raise ConfigError("drafter does not match the target: " + "; ".join(problems))


def load_assistant_config(model_dir: Path) -> AssistantConfig:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: a drafter directory needs a config.json (Hugging Face layout)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return AssistantConfig.from_dict(raw)
