"""PromptCache: prefix hits give the logits of a cold prefill; reuse across turns; LRU eviction; save / load."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model.generate import prefill
from mlx_model.prefix_cache import PromptCache, block_hashes
from tests.test_kv_support import K_EQ_V, KV_SHARED, random_ids, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(**K_EQ_V)


def cold(model, prompt, kv_bits=None):
    return np.array(prefill(model, mx.array([prompt]), mlx_model.make_cache(model, kv_bits=kv_bits, page_size=16))[0])


@pytest.mark.parametrize("kv_bits", [None, 4])
def test_prefix_hits_give_cold_prefill_logits(model, kv_bits):
    pc = PromptCache(model, kv_bits=kv_bits, page_size=16)
    turn1 = random_ids(100, seed=1)
    reply = list(pc.stream_generate(turn1, max_tokens=10))
    assert (pc.last_reused, pc.last_prefilled) == (0, 100)

    # Next turn extends prompt + reply: the live cache is reused as is.
    turn2 = turn1 + reply + random_ids(37, seed=2)
    logits = np.array(pc.prefill(turn2))
    assert (pc.last_reused, pc.last_prefilled) == (109, 38)
    assert np.abs(logits - cold(model, turn2, kv_bits)).max() <= 1e-5

    # A prompt that shares only the first 70 tokens (a compacted trace): page-aligned reuse.
    branch = turn1[:70] + random_ids(50, seed=3)
    logits = np.array(pc.prefill(branch))
    assert pc.last_reused in (64, 70)
    assert np.abs(logits - cold(model, branch, kv_bits)).max() <= 1e-5

    # Back to the first conversation: its pages and the sliding checkpoint come from the store.
    turn3 = turn2 + random_ids(20, seed=4)
    logits = np.array(pc.prefill(turn3))
    assert pc.last_reused == 144  # the newest page boundary of turn 2 (147 tokens)
    assert np.abs(logits - cold(model, turn3, kv_bits)).max() <= 1e-5


def test_shared_pages_are_not_copied_and_survive_rollback(model):
    pc = PromptCache(model, page_size=16)
    base = random_ids(80, seed=6)
    pc.prefill(base + random_ids(30, seed=7))
    stored_page = pc.blocks[block_hashes(base, 16)[2]].pages[2]
    pc.prefill(base + random_ids(30, seed=8))  # diverges at 80: live rollback to the page boundary
    assert pc.cache[2].pages[2] is stored_page  # same object: shared, not copied
    pc.cache.trim(pc.cache.offset - 40)  # roll back into the shared page: the tail gets a private copy
    assert pc.blocks[block_hashes(base, 16)[2]].pages[2] is stored_page
    logits = np.array(pc.prefill(base + [5, 6, 7]))
    assert np.abs(logits - cold(model, base + [5, 6, 7])).max() <= 1e-5


def test_agent_turns_prefill_only_new_tokens(model):
    pc = PromptCache(model, page_size=16)
    trace = random_ids(150, seed=9)
    for turn in range(5):
        result = pc.generate(trace, max_tokens=8)
        if turn:
            assert result.reused_tokens == pc.last_reused >= len(trace) - 40
        trace = trace + result.tokens + random_ids(30, seed=10 + turn)


def test_lru_eviction_keeps_memory_under_budget(model):
    probe = PromptCache(model, page_size=16)
    probe.prefill(random_ids(160, seed=20))
    pages = sum(page.nbytes for block in probe.blocks.values() for page in block.pages.values())
    budget = probe.nbytes + int(0.6 * pages)  # room for the live cache and part of another conversation
    pc = PromptCache(model, page_size=16, memory_budget=budget)
    prompts = [random_ids(160, seed=30 + i) for i in range(4)]
    for prompt in prompts:
        pc.prefill(prompt)
        assert pc.nbytes <= budget
    # The oldest conversations were evicted, the newest is still live; everything stays correct.
    assert block_hashes(prompts[0], 16)[0] not in pc.blocks
    again = prompts[0] + [9]
    logits = np.array(pc.prefill(again))
    assert pc.last_reused == 0
    assert np.abs(logits - cold(model, again)).max() <= 1e-5
    held = [b for b in pc.blocks.values() if b.holders]
    assert len(held) == 160 // 16  # ref counts: the live cache holds its ten pages


@pytest.mark.parametrize("kv_bits,config", [(None, K_EQ_V), (8, K_EQ_V), (4, KV_SHARED)])
def test_save_and_load_resume_without_prefill(tmp_path, kv_bits, config):
    model = tiny_model(**config)
    pc = PromptCache(model, kv_bits=kv_bits, page_size=16)
    prompt = random_ids(90, seed=11)
    reply = list(pc.stream_generate(prompt, max_tokens=5))
    path = tmp_path / "session.safetensors"
    pc.save(path)

    resumed = PromptCache(model, kv_bits=kv_bits, page_size=16)
    resumed.load(path)
    assert resumed.tokens == prompt + reply[:-1] and resumed.cache.offset == 94
    follow = prompt + reply + [7, 8]
    logits = np.array(resumed.prefill(follow))
    assert (resumed.last_reused, resumed.last_prefilled) == (94, 3)
    assert np.abs(logits - np.array(pc.prefill(follow))).max() <= 1e-6


def test_load_refuses_other_models_settings_and_bad_files(tmp_path, model):
    pc = PromptCache(model, page_size=16)
    pc.prefill(random_ids(40))
    path = tmp_path / "s.safetensors"
    pc.save(path)
    for other in (PromptCache(model, page_size=16, kv_bits=8), PromptCache(tiny_model(seed=1, **K_EQ_V), page_size=16)):
        other.prefill([1, 2, 3])
        with pytest.raises(ValueError, match="different model or different cache settings"):
            other.load(path)
        assert other.tokens == [1, 2, 3]  # nothing lost
    (tmp_path / "junk.safetensors").write_bytes(b"not a cache")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        pc.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        pc.load(tmp_path / "missing.safetensors")
    with pytest.raises(Exception):
        pc.save(tmp_path / "no-such-dir" / "s.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.safetensors", "s.safetensors"]
