"""Speculative decoding with the MTP drafter: draft k tokens, verify them in one target forward, roll back.

Each round starts from the last token t (at position p, not yet in the target cache) and the target's hidden
state at p - 1. The drafter proposes d1..dk at the constant position p, reading the target's KV. The target
then runs once over [t, d1..dk]; the longest acceptable prefix is kept (greedy: drafts equal to the target's
argmax; sampling: exact rejection sampling, so the output distribution is the target's own), the cache is
trimmed back over the rejected drafts, and the target's own next token (the "bonus") starts the next round.

The draft length adapts: it picks the k with the best expected tokens per second from the running acceptance
rate and the measured cost of drafter steps and target forwards, and falls back to plain decoding (k = 0)
when drafting does not pay, probing again from time to time (less and less often while it keeps not paying).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import mlx.core as mx

from mlx_model.assistant import Drafter, TargetCacheView, check_pair, target_kv_sources
from mlx_model.cache import ModelCache
from mlx_model.compiled_step import hidden_states
from mlx_model.gemma4 import Model
from mlx_model.prefill import prefill_hidden

MAX_DRAFT = 8


@dataclass
class SpeculativeStats:
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0  # draft-and-verify rounds
    plain_steps: int = 0  # target forwards without drafting
    generated: int = 0
    draft_seconds: float = 0.0
    target_seconds: float = 0.0

    @property
    def target_forwards(self) -> int:
        return self.rounds + self.plain_steps

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_target_forward(self) -> float:
        return self.generated / self.target_forwards if self.target_forwards else 0.0

    def as_dict(self) -> dict:
        return {"drafted": self.drafted, "accepted": self.accepted, "acceptance_rate": self.acceptance_rate,
                "rounds": self.rounds, "plain_steps": self.plain_steps, "generated": self.generated,
                "tokens_per_target_forward": self.tokens_per_target_forward,
                "draft_seconds": self.draft_seconds, "target_seconds": self.target_seconds}


class DraftLengthPolicy:
    """Chooses how many tokens to draft next: a fixed k, or adaptively (k = 0 means a plain decoding step).

    Adaptive model: the draft at depth i is accepted with probability a_i once the drafts before it were, so a
    round of k drafts yields 1 + sum over j <= k of (a_1 ... a_j) tokens for one target forward over k + 1
    tokens plus k drafter steps; the k with the best expected tokens per second wins. Each a_i is estimated from
    decayed counts of the rounds that reached depth i, shrunk toward the acceptance pooled over all depths, so
    rarely reached depths borrow from it (acceptance is not geometric: once a draft is accepted the text is
    often in a predictable stretch, and the next one is more likely accepted). Costs are running averages of
    measured times.
    """

    PROBE_EVERY = 16  # plain steps between exploratory draft rounds when drafting clearly does not pay
    PROBE_SOON = 4  # ... and when it falls short by less than NEAR_BREAK_EVEN (a short run of rejections)
    # Each probe after which drafting still does not pay doubles the wait, up to PROBE_MAX steps: where a verify
    # forward costs about k + 1 plain steps (MLX's CPU quantized kernels) a probe never pays, and probing every
    # 16 steps cost ~4% (0.95-0.96x of plain at 12B widths); a round chosen on its merits resets the wait.
    PROBE_MAX = 64
    NEAR_BREAK_EVEN = 0.8
    DECAY = 0.95  # weight of past acceptance evidence per round (about the last 20 rounds count)
    SHRINK = 2.0  # pseudo-observations of the pooled acceptance in each depth's estimate
    # The starting belief: PRIOR_ROUNDS rounds' worth of acceptance PRIOR_ACCEPTANCE at every depth (it decays
    # like real evidence). With one pseudo-round at depth 1 only, a single early rejection sent a fresh policy to
    # plain decoding for many steps. Replaying the trained pair's acceptance through the policy
    # (bench/draft_policy.py): 1.67x vs 1.61x on 96-token prompts, 1.72x either way on 256-token ones.
    PRIOR_ROUNDS = 4.0
    PRIOR_ACCEPTANCE = 0.5

    def __init__(self, fixed: int | None = None, max_draft: int = MAX_DRAFT):
        if fixed is not None and not 0 <= fixed <= max_draft:
            raise ValueError(f"draft length must be between 0 and {max_draft}, got {fixed}")
        self.fixed, self.max_draft = fixed, max_draft
        self.reached = [self.PRIOR_ROUNDS] * max_draft  # decayed count of rounds that drafted depth i + 1
        self.kept = [self.PRIOR_ROUNDS * self.PRIOR_ACCEPTANCE] * max_draft  # ... and kept it
        self.first_draft_cost: float | None = None  # seconds for a round's first drafter step (gathers the KV)
        self.draft_cost: float | None = None  # seconds per further drafter step
        self.verify_cost: dict[int, float] = {}  # seconds per target forward over k + 1 tokens
        self.plain_cost: float | None = None
        self.plain_run = 0
        self.failed_probes = 0  # probes since drafting last paid

    def acceptance(self) -> list[float]:
        """Estimated a_1 .. a_max: acceptance at each depth given the drafts before it were accepted."""
        pooled = sum(self.kept) / sum(self.reached)
        return [(kept + self.SHRINK * pooled) / (reached + self.SHRINK)
                for kept, reached in zip(self.kept, self.reached)]

    def next_length(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.first_draft_cost is None or self.plain_cost is None:
            return 0 if self.plain_cost is None else 2  # measure a plain step first, then a short draft
        plain_rate = 1.0 / self.plain_cost
        best_k, best_rate, best_drafting = 0, plain_rate, 0.0
        tokens, survive = 1.0, 1.0
        for k, a in enumerate(self.acceptance(), start=1):
            survive *= a
            tokens += survive
            verify = self.verify_cost.get(k) or max(self.verify_cost.values(), default=self.plain_cost)
            rate = tokens / (verify + self.first_draft_cost + (k - 1) * (self.draft_cost or self.first_draft_cost))
            best_drafting = max(best_drafting, rate)
            if rate > best_rate:
                best_k, best_rate = k, rate
        if best_k == 0:
            wait = self.PROBE_SOON if best_drafting >= self.NEAR_BREAK_EVEN * plain_rate else self.PROBE_EVERY
            if self.plain_run >= min(wait << self.failed_probes, self.PROBE_MAX):
                self.failed_probes += 1  # cleared as soon as drafting pays again
                return 1
        else:
            self.failed_probes = 0
        return best_k

    def record_plain(self, seconds: float) -> None:
        self.plain_cost = _average(self.plain_cost, seconds)
        self.plain_run += 1

    def record_round(self, k: int, accepted: int, first_draft_seconds: float, more_draft_seconds: float,
                     verify_seconds: float) -> None:
        """A round of k drafts, `accepted` of them kept; the time of its first drafter step, of the k - 1 others
        and of the verifying target forward."""
        self.plain_run = 0
        for i in range(self.max_draft):
            self.reached[i] *= self.DECAY
            self.kept[i] *= self.DECAY
        for i in range(min(accepted + 1, k)):  # depths 1 .. accepted were kept; the next one (if drafted) was not
            self.reached[i] += 1
            self.kept[i] += i < accepted
        self.first_draft_cost = _average(self.first_draft_cost, first_draft_seconds)
        if k > 1:
            self.draft_cost = _average(self.draft_cost, more_draft_seconds / (k - 1))
        self.verify_cost[k] = _average(self.verify_cost.get(k), verify_seconds)


def _average(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else (1 - weight) * old + weight * new


def _probabilities(logits: mx.array, temperature: float, top_p: float) -> mx.array:
    """The sampling distribution plain decoding uses: softmax(logits / T), restricted to the top-p nucleus."""
    probs = mx.softmax(logits.astype(mx.float32) / temperature, axis=-1)
    if top_p < 1.0:
        order = mx.argsort(-probs, axis=-1)
        sorted_probs = mx.take_along_axis(probs, order, axis=-1)
        keep_sorted = (mx.cumsum(sorted_probs, axis=-1) - sorted_probs) < top_p
        keep = mx.put_along_axis(mx.zeros_like(keep_sorted), order, keep_sorted, axis=-1)
        probs = mx.where(keep, probs, 0.0)
        probs = probs / probs.sum(axis=-1, keepdims=True)
    return probs


def _sample(probs: mx.array) -> mx.array:
    return mx.random.categorical(mx.log(probs), axis=-1)


def accept_drafts(drafts: list[int], target_probs: mx.array | None, draft_probs: mx.array | None,
                  target_logits: mx.array) -> tuple[int, int]:
    """How many drafts to keep and the next token.

    Greedy (probs None): keep drafts while they equal the target's argmax; the next token is the argmax after
    them. Sampling: draft i is kept with probability min(1, p(d)/q(d)); the first rejected one is replaced by a
    sample of max(p - q, 0) (normalized); if all are kept the next token is sampled from p after them. This is
    the standard speculative-sampling rule; its output is distributed exactly as sampling from p.
    `target_probs`/`target_logits` have k + 1 rows (one per draft, then the bonus position).
    """
    if target_probs is None:
        choice = mx.argmax(target_logits, axis=-1).tolist()
        n = 0
        while n < len(drafts) and drafts[n] == choice[n]:
            n += 1
        return n, choice[n]
    k = len(drafts)
    idx = mx.array(drafts)
    p_d = target_probs[mx.arange(k), idx]
    q_d = draft_probs[mx.arange(k), idx]
    accept = mx.random.uniform(shape=(k,)) < mx.minimum(1.0, p_d / q_d)
    accept = accept.tolist()
    n = 0
    while n < k and accept[n]:
        n += 1
    if n < k:
        residual = mx.maximum(target_probs[n] - draft_probs[n], 0.0)
        return n, int(_sample(residual / residual.sum()).item())
    return n, int(_sample(target_probs[k]).item())


def speculative_stream(target: Model, drafter: Drafter, ids: mx.array, cache: ModelCache, *, max_tokens: int,
                       temperature: float = 0.0, top_p: float = 1.0, stop_ids: Iterable[int] = (),
                       draft_length: int | None = None, stats: SpeculativeStats | None = None) -> Iterator[int]:
    """Yield generated tokens for ids [1, length] (batch of one), drafting with `drafter`.

    `stream_generate` calls it with its contract already applied: a non-empty prompt, the seed set, the cache
    made and `max_tokens` cut to what fits its max_context (so a verify forward never passes it).
    `draft_length` None adapts the number of drafts per round; an int fixes it (0 = plain decoding).
    """
    check_pair(target.config, drafter)
    stats = stats if stats is not None else SpeculativeStats()
    policy = DraftLengthPolicy(draft_length)
    sources = target_kv_sources(target.config)
    stops = set(stop_ids)
    sampling = temperature > 0

    def pick(logits: mx.array) -> int:
        if not sampling:
            return int(mx.argmax(logits, axis=-1).item())
        return int(_sample(_probabilities(logits, temperature, top_p)).item())

    start = time.perf_counter()
    hidden = prefill_hidden(target, ids, cache)
    token = pick(target.logits(hidden)[0, -1])
    stats.target_seconds += time.perf_counter() - start
    last_hidden = hidden[:, -1:, :]
    produced = 0
    while True:
        produced += 1
        stats.generated += 1
        yield token
        if token in stops or produced >= max_tokens:
            return
        k = min(policy.next_length(), max_tokens - produced - 1)
        if k <= 0:  # plain step
            start = time.perf_counter()
            hidden = hidden_states(target, mx.array([[token]]), cache)
            token = pick(target.logits(hidden)[0, -1])
            elapsed = time.perf_counter() - start
            stats.target_seconds += elapsed
            stats.plain_steps += 1
            policy.record_plain(elapsed)
            last_hidden = hidden
            continue

        # Draft k tokens at the constant position p = cache.offset.
        start = time.perf_counter()
        position = cache.offset
        views = {layer_type: TargetCacheView(cache[index]) for layer_type, index in sources.items()}
        current, state = mx.array([[token]]), last_hidden
        drafts, draft_probs = [], []
        for step in range(k):
            inputs = mx.concatenate([target.model.embed(current), state], axis=-1)
            logits, state = drafter(inputs, position, views)
            if sampling:
                probs = _probabilities(logits[0, -1], temperature, top_p)
                draft_probs.append(probs)
                current = _sample(probs).reshape(1, 1)
            else:
                current = mx.argmax(logits[:, -1], axis=-1).reshape(1, 1)
            drafts.append(current)
            if step == 0:  # timed apart: it also gathers the target K/V the later steps reuse
                mx.eval(current, state, draft_probs)
                first_seconds = time.perf_counter() - start
        drafts = mx.concatenate(drafts, axis=1)
        mx.eval(drafts, draft_probs)
        draft_list = drafts[0].tolist()
        draft_seconds = time.perf_counter() - start

        # Verify [token, d1..dk] in one target forward.
        start = time.perf_counter()
        hidden = hidden_states(target, mx.concatenate([mx.array([[token]]), drafts], axis=1), cache)
        logits = target.logits(hidden)[0]
        target_probs = _probabilities(logits, temperature, top_p) if sampling else None
        n, token_next = accept_drafts(draft_list, target_probs,
                                      mx.stack(draft_probs) if sampling else None, logits)
        removed = cache.trim(k - n)
        if removed != k - n:
            raise RuntimeError(f"cache could roll back only {removed} of {k - n} rejected drafts")
        verify_seconds = time.perf_counter() - start
        stats.draft_seconds += draft_seconds
        stats.target_seconds += verify_seconds
        stats.rounds += 1
        stats.drafted += k
        stats.accepted += n
        policy.record_round(k, n, first_seconds, draft_seconds - first_seconds, verify_seconds)
        last_hidden = hidden[:, n:n + 1, :]
        for j, accepted in enumerate(draft_list[:n]):
            produced += 1
            stats.generated += 1
            yield accepted
            if accepted in stops or produced >= max_tokens:
                cache.trim(n - j)  # keep the stream_generate contract: the last yielded token is not in the cache
                return
        token = token_next
