"""Speculative decoding with the MTP drafter: identical greedy output, exact sampling distribution, rollback."""
from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map
import numpy as np
import pytest

import mlx_model
from mlx_model.assistant import AssistantConfig, Drafter, SharedKV, TargetCacheView, target_kv_sources
from mlx_model.config import TextConfig
from mlx_model.gemma4 import Model
from mlx_model.speculative import DraftLengthPolicy, accept_drafts

S, F = "sliding_attention", "full_attention"


def tiny_pair(vocab: int = 256, window: int = 8, seed: int = 0):
    """A random target and a random drafter that fits it (both float32)."""
    mx.random.seed(seed)
    target_raw = dict(model_type="gemma4_unified_text", vocab_size=vocab, hidden_size=64, intermediate_size=96,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
                      sliding_window=window, layer_types=[S, S, S, F], final_logit_softcapping=30.0)
    target = Model(TextConfig.from_dict(target_raw))
    drafter_text = dict(target_raw, hidden_size=32, intermediate_size=64, num_hidden_layers=2, layer_types=[S, F])
    drafter = Drafter(AssistantConfig.from_dict({"model_type": "gemma4_unified_assistant",
                                                 "text_config": drafter_text, "backbone_hidden_size": 64}))
    # Larger random weights than the default init, so the target's next-token choice is not a near tie.
    for module in (target, drafter):
        module.update(tree_map(lambda p: p * 3 if p.ndim == 2 else p, module.parameters()))
    mx.eval(target.parameters(), drafter.parameters())
    return target, drafter


@pytest.fixture(scope="module")
def pair():
    return tiny_pair()


@pytest.mark.parametrize("draft_length", [1, 2, 3, 5, 8, None])
def test_greedy_with_drafter_is_identical_past_the_window(pair, draft_length):
    target, drafter = pair
    for prompt_seed in range(4):
        prompt = np.random.default_rng(prompt_seed).integers(3, 256, size=5 + 7 * prompt_seed).tolist()
        plain = mlx_model.generate(target, prompt, max_tokens=320).tokens
        spec = mlx_model.generate(target, prompt, max_tokens=320, drafter=drafter, draft_length=draft_length)
        assert spec.tokens == plain, (prompt_seed, draft_length)
        stats = spec.speculative
        assert stats.generated == 320
        if draft_length:
            assert stats.rounds > 0 and stats.drafted >= stats.accepted


def test_drafter_that_agrees_is_accepted(pair):
    """Self-consistency: when the draft equals the target's choice it is kept, so repeated text is cheap."""
    target, drafter = pair
    prompt = [7] * 12
    spec = mlx_model.generate(target, prompt, max_tokens=60, drafter=drafter, draft_length=4)
    stats = spec.speculative
    assert stats.tokens_per_target_forward >= 1.0
    assert 0.0 <= stats.acceptance_rate <= 1.0
    assert stats.target_forwards == stats.rounds + stats.plain_steps


def test_cache_contract_after_speculative_generation(pair):
    target, drafter = pair
    prompt = list(range(10, 30))
    cache = mlx_model.make_cache(target)
    tokens = list(mlx_model.stream_generate(target, prompt, max_tokens=25, cache=cache, drafter=drafter,
                                            draft_length=4))
    assert len(tokens) == 25
    assert cache.offset == len(prompt) + len(tokens) - 1
    # Continuing from that cache gives what plain decoding gives.
    plain = mlx_model.generate(target, prompt, max_tokens=35).tokens
    rest = list(mlx_model.stream_generate(target, [tokens[-1]], max_tokens=10, cache=cache))
    assert tokens + rest == plain


@pytest.mark.parametrize("context", [5, 40, 150])  # inside the window; past it; several pages and chunks
@pytest.mark.parametrize("paged", [True, False])
def test_drafter_reads_the_target_cache_like_explicit_kv(pair, context, paged):
    """What the drafter sees through `TargetCacheView` (gathered once, reused by every draft step of a round)
    equals explicit K/V: every target token before the drafted position, the last `window` on sliding layers."""
    target, drafter = pair
    ids = mx.array([np.random.default_rng(context).integers(3, 256, size=context).tolist()])
    options = dict(page_size=16, attention_chunk=32) if paged else dict(paged=False)
    cache, simple = target.make_cache(**options), target.make_cache(paged=False)
    hidden = target.hidden_states(ids, cache)
    target.hidden_states(ids, simple)
    sources = target_kv_sources(target.config)
    views = {kind: TargetCacheView(cache[index]) for kind, index in sources.items()}
    window = target.config.sliding_window
    explicit = {}
    for kind, index in sources.items():
        layer = simple[index]
        keys, values = layer.keys[..., : layer.stored, :], layer.values[..., : layer.stored, :]
        explicit[kind] = SharedKV(keys, values, visible=window if kind == S else None)
    state = hidden[:, -1:, :]
    token = mx.array([[11]])
    for _ in range(3):  # draft steps at one position reuse the view's gathered K/V
        inputs = mx.concatenate([target.model.embed(token), state], axis=-1)
        logits, state = drafter(inputs, context, views)
        expected_logits, expected_state = drafter(inputs, context, explicit)
        assert np.abs(np.array(logits) - np.array(expected_logits)).max() <= 1e-4
        assert np.abs(np.array(state) - np.array(expected_state)).max() <= 1e-4
        token = mx.argmax(logits[:, -1], axis=-1).reshape(1, 1)


def test_compiled_drafter_steps_follow_weight_updates():
    """The drafter runs compiled pieces between its K/V reads; they equal the plain (uncompiled) composition and
    see later weight updates (the parameters are tracked inputs, not frozen constants)."""
    _, drafter = tiny_pair(seed=3)
    rng = np.random.default_rng(3)
    inputs = mx.array(rng.standard_normal((1, 1, 128)).astype(np.float32))
    kv = {kind: SharedKV(*(mx.array(rng.standard_normal((1, heads, 12, dim)).astype(np.float32)) for _ in range(2)))
          for kind, heads, dim in ((S, 2, 16), (F, 1, 32))}

    def uncompiled():
        layers = drafter.model.layers
        position = mx.array(12)
        h, queries = drafter._enter(inputs, position)
        for i, layer in enumerate(layers):
            attended = kv[layer.self_attn.spec.attention].attend(queries, 12)
            if i + 1 < len(layers):
                h, queries = drafter._between(i, h, attended, position)
        return drafter._leave(h, attended)

    for _ in range(2):
        logits, state = drafter(inputs, 12, kv)
        expected_logits, expected_state = uncompiled()
        assert np.abs(np.array(logits) - np.array(expected_logits)).max() <= 1e-5
        assert np.abs(np.array(state) - np.array(expected_state)).max() <= 1e-5
        before = np.array(logits)
        drafter.update(tree_map(lambda p: p * 0.5 if p.ndim == 2 else p, drafter.parameters()))
    assert np.abs(np.array(drafter(inputs, 12, kv)[0]) - before).max() > 1e-2


def test_rejection_rule_preserves_the_target_distribution():
    """accept_drafts with fixed p and q: the first emitted token is distributed as p, whatever q is."""
    mx.random.seed(0)
    p = mx.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    q = mx.array([[0.1, 0.1, 0.7, 0.1], [0.4, 0.1, 0.1, 0.4]])
    counts = np.zeros(4)
    trials = 6000
    rng = np.random.default_rng(0)
    for _ in range(trials):
        d1 = int(rng.choice(4, p=np.array(q[0])))
        d2 = int(rng.choice(4, p=np.array(q[1])))
        n, nxt = accept_drafts([d1, d2], p, q, mx.zeros((3, 4)))
        counts[d1 if n >= 1 else nxt] += 1
    expected = np.array(p[0]) * trials
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.3, (counts, expected)  # 3 degrees of freedom, p = 0.001


def test_speculative_sampling_matches_plain_sampling_end_to_end():
    """Tiny vocabulary: the distribution of the 2nd and 3rd generated tokens with the drafter equals the exact
    distribution computed from the target's own probabilities."""
    target, drafter = tiny_pair(vocab=6, seed=1)
    prompt = [1, 2, 3, 4]
    temperature = 1.0

    def probs(ids):
        return np.array(mx.softmax(target(mx.array([ids]))[0, -1] / temperature))

    p1 = probs(prompt)
    exact2 = sum(p1[a] * probs(prompt + [a]) for a in range(6))
    counts = np.zeros(6)
    trials = 1500
    for seed in range(trials):
        out = mlx_model.generate(target, prompt, max_tokens=2, temperature=temperature, drafter=drafter,
                                 draft_length=1, seed=seed).tokens
        counts[out[1]] += 1
    expected = exact2 * trials
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert chi2 < 20.5, (counts, expected)  # <= 5 degrees of freedom, p = 0.001


def test_adaptive_policy_drops_drafting_that_does_not_pay():
    policy = DraftLengthPolicy()
    assert policy.next_length() == 0  # measures a plain step first
    policy.record_plain(0.010)
    assert policy.next_length() == 2  # then probes drafting
    for _ in range(20):  # nothing accepted, drafting expensive
        policy.record_round(2, 0, first_draft_seconds=0.005, more_draft_seconds=0.005, verify_seconds=0.012)
    assert policy.next_length() == 0
    for _ in range(DraftLengthPolicy.PROBE_EVERY):
        policy.record_plain(0.010)
    assert policy.next_length() == 1  # probes again after a while
    good = DraftLengthPolicy()
    good.record_plain(0.010)
    for _ in range(20):  # everything accepted, drafting cheap
        good.record_round(4, 4, first_draft_seconds=0.0005, more_draft_seconds=0.0015, verify_seconds=0.011)
    assert good.next_length() >= 4


def test_adaptive_policy_estimates_acceptance_per_depth():
    policy = DraftLengthPolicy()
    policy.record_plain(0.010)
    for i in range(40):  # the first draft is kept half the time; after a kept one, every later draft is kept
        policy.record_round(4, 4 if i % 2 else 0, first_draft_seconds=0.001, more_draft_seconds=0.003,
                            verify_seconds=0.011)
    a = policy.acceptance()
    assert 0.4 < a[0] < 0.6 and min(a[1:4]) > 0.85
    # A geometric model with the pooled rate (about 0.8 here) would predict fewer tokens for deep drafts; the
    # per-depth model expects 1 + 0.5 * (1 + 1 + 1 + 1) = 3 tokens for k = 4, so it keeps drafting deep.
    assert policy.next_length() >= 4


def test_adaptive_policy_does_not_charge_the_first_steps_overhead_to_every_draft():
    """The first draft step of a round also gathers the target's K/V; later steps are cheaper. Costing every
    step like the first would make deep drafts look too expensive."""
    chosen = {}
    for first, more in ((0.004, 0.0005), (0.00225, 0.00225)):  # the same 4.5 ms for two drafts, split apart
        policy = DraftLengthPolicy()
        policy.record_plain(0.010)
        for i in range(40):  # 3 of 4 rounds keep both drafts
            policy.record_round(2, 2 if i % 4 else 0, first_draft_seconds=first, more_draft_seconds=more,
                                verify_seconds=0.011)
        chosen[first] = policy.next_length()
    assert chosen[0.004] > chosen[0.00225] >= 1


def test_one_early_rejection_does_not_stop_a_fresh_policy_drafting():
    """Costs as measured on the trained pair (a draft step ~0.08 of a plain step, verifying 3 tokens ~1.2x)."""
    policy = DraftLengthPolicy()
    policy.record_plain(0.0030)
    assert policy.next_length() == 2
    policy.record_round(2, 0, first_draft_seconds=0.0003, more_draft_seconds=0.00025, verify_seconds=0.0036)
    assert policy.next_length() >= 1


def test_adaptive_policy_probes_soon_after_a_near_miss():
    policy = DraftLengthPolicy()
    policy.record_plain(0.010)
    for _ in range(30):  # nothing accepted, but drafting is cheap: plain wins only narrowly
        policy.record_round(1, 0, first_draft_seconds=0.0005, more_draft_seconds=0.0, verify_seconds=0.0105)
    policy.kept[0] = 0.6 * policy.reached[0]  # as if 60% of the first drafts had been kept
    assert policy.next_length() >= 1
    policy.kept[0] = 0.05 * policy.reached[0]
    assert policy.next_length() == 0
    for _ in range(DraftLengthPolicy.PROBE_SOON):
        policy.record_plain(0.010)
    assert policy.next_length() == 1  # within NEAR_BREAK_EVEN of plain: look again after PROBE_SOON steps


def test_speculative_generation_stops_at_max_context(pair):
    """Verify forwards add k + 1 tokens at once; generation must still stop at the limit, not fail there."""
    target, drafter = pair
    prompt = np.random.default_rng(5).integers(3, 256, size=30).tolist()
    plain_cache = mlx_model.make_cache(target, max_context=40, page_size=16)
    plain = mlx_model.generate(target, prompt, max_tokens=50, cache=plain_cache)
    cache = mlx_model.make_cache(target, max_context=40, page_size=16)
    spec = mlx_model.generate(target, prompt, max_tokens=50, cache=cache, drafter=drafter, draft_length=8)
    assert spec.tokens == plain.tokens and len(spec.tokens) == 11 and spec.finish_reason == "length"
    assert cache.offset == 40


def test_speculative_prefill_cuts_pages_like_plain_prefill():
    """With quantized pages, speculative and plain generation prefill identical pages (chunks end at page
    boundaries, so a token sees earlier pages quantized either way) and give the same greedy output. The trained
    pair: its full layer has head_dim 128, which quantizes in groups of 64."""
    target, _ = mlx_model.load(PAIR / "target", dtype=mx.float32)
    drafter = mlx_model.load_drafter(PAIR / "drafter", dtype=mx.float32)
    prompt = np.random.default_rng(6).integers(3, 2048, size=150).tolist()
    for kv_bits in (8, 4):
        caches = [mlx_model.make_cache(target, kv_bits=kv_bits, page_size=64, rollback_slack=9) for _ in range(2)]
        plain = mlx_model.generate(target, prompt, max_tokens=40, cache=caches[0])
        spec = mlx_model.generate(target, prompt, max_tokens=40, drafter=drafter, draft_length=3, cache=caches[1])
        assert spec.tokens == plain.tokens, kv_bits
        full = [i for i, layer in enumerate(target.config.layers) if layer.attention == F]
        for i in full:
            first_pages = [np.array(c[i].pages[0].values[0]) for c in caches]
            assert np.array_equal(*first_pages)
            second_pages = [np.array(c[i].pages[1].values[0]) for c in caches]
            assert np.array_equal(*second_pages), kv_bits


def test_bad_draft_length_is_refused(pair):
    target, drafter = pair
    with pytest.raises(ValueError, match="draft length must be between 0 and 8"):
        mlx_model.generate(target, [1, 2, 3], max_tokens=3, drafter=drafter, draft_length=9)


def test_mismatched_drafter_is_refused(pair):
    target, _ = pair
    _, other = tiny_pair(vocab=128)
    with pytest.raises(mlx_model.ConfigError, match="vocab 128 != target vocab 256"):
        mlx_model.generate(target, [1, 2, 3], max_tokens=3, drafter=other)


PAIR = __import__("pathlib").Path(__file__).parent / "fixtures" / "draft_pair"


def test_trained_pair_greedy_identical_and_accepted():
    """The pair trained by bench/train_pair.py (stdlib code): identical greedy output over 300 tokens (the
    target's sliding window is 64) and a drafter that really predicts the target."""
    target, tokenizer = mlx_model.load(PAIR / "target", dtype=mx.float32)
    drafter = mlx_model.load_drafter(PAIR / "drafter", dtype=mx.float32)
    prompts = ["import os\n\ndef walk(top):\n    for name in os.listdir(top):\n",
               "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"]
    for text in prompts:
        prompt = tokenizer.encode(text)
        plain = mlx_model.generate(target, prompt, max_tokens=300).tokens
        for draft_length in (3, None):
            spec = mlx_model.generate(target, prompt, max_tokens=300, drafter=drafter, draft_length=draft_length)
            assert spec.tokens == plain
            if draft_length == 3:  # fixed k: deterministic (adaptive choices depend on measured timings)
                # measured 0.67 and 0.57 for these prompts; a drafter that did not predict the target would
                # be accepted about 1 time in 2048
                assert spec.speculative.acceptance_rate > 0.45


def _simulated_speedup(alpha: float, verify_cost, draft_cost: float, tokens: int = 1000, seed: int = 0) -> float:
    """The adaptive policy run against a cost model (seconds per plain step = 1) with drafts accepted
    independently with probability alpha: tokens per unit of time, relative to plain decoding."""
    rng = np.random.default_rng(seed)
    policy, elapsed, produced = DraftLengthPolicy(), 0.0, 0
    while produced < tokens:
        k = policy.next_length()
        if k == 0:
            elapsed, produced = elapsed + 1.0, produced + 1
            policy.record_plain(1.0)
            continue
        kept = 0
        while kept < k and rng.random() < alpha:
            kept += 1
        verify = verify_cost(k)
        policy.record_round(k, kept, draft_cost, draft_cost * (k - 1), verify)
        elapsed, produced = elapsed + k * draft_cost + verify, produced + kept + 1
    return produced / elapsed


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
def test_adaptive_policy_is_never_much_slower_than_plain(alpha):
    """Where verifying k + 1 tokens costs about k + 1 steps (MLX's CPU quantized kernels) no draft pays, at any
    acceptance: the policy must stay within 3% of plain decoding, probes included. Where verifying is nearly
    free (memory-bound accelerators) it must take the gain."""
    speedups = [_simulated_speedup(alpha, lambda k: 0.95 * (k + 1), 0.05, seed=s) for s in range(3)]
    assert min(speedups) >= 0.97, speedups
    fast = _simulated_speedup(alpha, lambda k: 1.0 + 0.03 * k, 0.03)
    assert fast >= (1.5 if alpha >= 0.7 else 1.0), fast
