"""Reference models for parity tests: small random Gemma 4 configs built and saved by transformers (torch, CPU)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BASE_TEXT = dict(
    vocab_size=256, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, rms_norm_eps=1e-6, sliding_window=8, max_position_embeddings=4096,
)


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>"]  # at Gemma's low ids 0-3


def make_tokenizer(directory: Path, specials: list[str] = GEMMA_SPECIALS) -> None:
    """A small byte-level BPE tokenizer (vocabulary 256) with `specials` first, trained on real text."""
    import json
    import shutil

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = (json.__doc__ or "") + (shutil.__doc__ or "") + "def add(a, b):\n    return a + b\n" * 20
    tok.train_from_iterator([text], trainer)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>"}))


def text_config_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs = dict(BASE_TEXT)
    kwargs.update(overrides)
    return kwargs


def build_reference(tmp_dir: Path, text_kwargs: dict[str, Any], *, multimodal: bool = False, seed: int = 0):
    """Build a transformers Gemma 4 model with randomized weights (norms and layer scalars too), save it as
    safetensors in `tmp_dir`, and return the torch model (float32, eval mode)."""
    import torch
    from transformers import (Gemma4UnifiedConfig, Gemma4UnifiedForCausalLM,
                              Gemma4UnifiedForConditionalGeneration, Gemma4UnifiedTextConfig)

    torch.manual_seed(seed)
    text_config = Gemma4UnifiedTextConfig(**text_kwargs)
    if multimodal:
        config = Gemma4UnifiedConfig(text_config=text_config.to_dict(), vision_config=None, audio_config=None)
        model = Gemma4UnifiedForConditionalGeneration(config)
    else:
        model = Gemma4UnifiedForCausalLM(text_config)
    model.config._attn_implementation = "eager"
    if multimodal:
        model.config.text_config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                # Attention has scale 1.0, so q.k grows with head_dim: keep random logits moderate, or the
                # softmax turns into a hard argmax and the model amplifies any rounding (chaotic in bf16).
                param.copy_(0.2 + 0.3 * torch.rand(param.shape, generator=gen))
            elif name.endswith("norm.weight"):
                param.copy_(0.5 + torch.rand(param.shape, generator=gen))
            elif name.endswith("embed_tokens.weight"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            else:
                # Projections that write into the residual stream get a smaller scale, so that deep random
                # models keep clear top-1 margins (as trained models do) instead of amplifying rounding noise.
                scale = 0.3 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
                param.copy_(torch.randn(param.shape, generator=gen) * scale * param.shape[-1] ** -0.5)
        for name, buf in model.named_buffers():
            if name.endswith("layer_scalar"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    model.eval()
    model.save_pretrained(tmp_dir)
    return model


def reference_logits(model, input_ids: np.ndarray, dtype=None) -> np.ndarray:
    import torch

    if dtype is not None:
        model = model.to(dtype)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(input_ids, dtype=torch.long), use_cache=False)
    return out.logits.float().numpy()


def build_reference_drafter(tmp_dir: Path, text_kwargs: dict[str, Any], *, backbone_hidden: int,
                            ordered: bool = False, num_centroids: int = 16, top_k: int = 4, seed: int = 0):
    """Build and save a transformers `Gemma4UnifiedAssistantForCausalLM` with random weights.

    transformers 5.23 cannot instantiate it from a config: with every layer KV-shared, `kv_sharing_modes`
    raises. For the duration of the construction we patch that property to mark every layer "reuse" (the
    shared K/V are then given explicitly to forward()).
    """
    import torch
    from transformers import (Gemma4UnifiedAssistantConfig, Gemma4UnifiedAssistantForCausalLM,
                              Gemma4UnifiedTextConfig)

    original = Gemma4UnifiedTextConfig.kv_sharing_modes

    def all_reuse(self):
        if self.num_kv_shared_layers == self.num_hidden_layers:
            return ["reuse"] * self.num_hidden_layers
        return original.fget(self)

    torch.manual_seed(seed)
    Gemma4UnifiedTextConfig.kv_sharing_modes = property(all_reuse)
    try:
        text = Gemma4UnifiedTextConfig(**text_kwargs)
        config = Gemma4UnifiedAssistantConfig(text_config=text.to_dict(), backbone_hidden_size=backbone_hidden,
                                              use_ordered_embeddings=ordered, num_centroids=num_centroids,
                                              centroid_intermediate_top_k=top_k)
        model = Gemma4UnifiedAssistantForCausalLM(config)
        model.config._attn_implementation = "eager"
        model.config.text_config._attn_implementation = "eager"
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.copy_(0.5 + torch.rand(param.shape, generator=gen))
                else:
                    param.copy_(torch.randn(param.shape, generator=gen) * param.shape[-1] ** -0.5)
            for name, buf in model.named_buffers():
                if name.endswith("layer_scalar"):
                    buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
                if name.endswith("token_ordering"):
                    buf.copy_(torch.randperm(buf.numel(), generator=gen))
        model.eval()
        model.save_pretrained(tmp_dir)
    finally:
        Gemma4UnifiedTextConfig.kv_sharing_modes = original
    return model
