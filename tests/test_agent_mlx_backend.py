"""The mlx backend on a tiny real Gemma 4 checkpoint: chat-format tokens, streaming, KV-cache reuse across turns."""
import shutil

import pytest

from agent.backends import BackendUnavailable
from agent.backends.mlx import MlxBackend
from agent.chat_format import render_conversation
from tests.model_refs import GEMMA_SPECIALS, build_reference, make_tokenizer, text_config_kwargs

S, F = "sliding_attention", "full_attention"
SMALL = text_config_kwargs(layer_types=[S, S, F], num_hidden_layers=3, attention_k_eq_v=True, global_head_dim=32,
                           num_global_key_value_heads=1, final_logit_softcapping=30.0)
SPECIALS = [*GEMMA_SPECIALS, "<|tool>", "<tool|>", "<|tool_call>",
            "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>', "<|channel>", "<channel|>"]
TOOLS = [{"name": "read_file", "description": "Read a file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("agent_ckpt")
    build_reference(path, SMALL)
    make_tokenizer(path, SPECIALS)
    return path


def test_control_strings_become_single_special_tokens(checkpoint):
    backend = MlxBackend(str(checkpoint))
    ids = backend.encode_prompt('<bos><|turn>user\nx<turn|>\n<|tool_call>call:f{a:<|"|>b<|"|>}<tool_call|>')
    tokenizer = backend.tokenizer
    for special in ("<|turn>", "<turn|>", "<|tool_call>", "<tool_call|>", '<|"|>'):
        assert tokenizer.token_to_id(special) in ids
    assert ids[0] == tokenizer.bos_id and ids.count(tokenizer.bos_id) == 1


def test_second_turn_reuses_the_cache_and_matches_a_fresh_run(checkpoint):
    backend = MlxBackend(str(checkpoint))
    messages = [{"role": "system", "content": "You write code."}, {"role": "user", "content": "def add(a, b):"}]
    streamed = []
    first = backend.complete(messages, TOOLS, max_tokens=6, on_text=streamed.append)
    assert "".join(streamed).strip() == first.text and first.tokens_out >= 1  # visible text only
    prompt_len = len(backend.encode_prompt(render_conversation(messages, TOOLS)))
    assert first.tokens_in == prompt_len

    messages += [{"role": "assistant", "content": first.raw}, {"role": "user", "content": "return a + b"}]
    second = backend.complete(messages, TOOLS, max_tokens=6, on_text=lambda t: None)
    fresh = MlxBackend(str(checkpoint)).complete(messages, TOOLS, max_tokens=6, on_text=lambda t: None)
    assert second.raw == fresh.raw
    assert second.tokens_in < fresh.tokens_in  # only the tokens after the cached prefix were fed


def test_missing_or_bad_weights_fail_fast_with_instructions(tmp_path, checkpoint):
    with pytest.raises(BackendUnavailable, match="gemma-agent convert"):
        MlxBackend(None)
    with pytest.raises(BackendUnavailable, match="does not exist"):
        MlxBackend(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match="--backend openai"):
        MlxBackend(str(tmp_path / "empty"))
    no_tokenizer = shutil.copytree(checkpoint, tmp_path / "no_tok", ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(BackendUnavailable, match="no tokenizer"):
        MlxBackend(str(no_tokenizer))


def test_prefix_reuse_and_drafter_on_the_trained_pair():
    """The real trained pair (tests/fixtures/draft_pair): the drafter changes nothing in the output, and
    turn 2 prefills only what turn 1 did not already cache."""
    from pathlib import Path

    pair = Path(__file__).parent / "fixtures" / "draft_pair"
    plain = MlxBackend(str(pair / "target"))
    drafted = MlxBackend(str(pair / "target"), drafter_path=str(pair / "drafter"))
    assert "drafter" in drafted.describe()
    messages = [{"role": "user", "content": "def parse(text):\n    lines = text.splitlines()\n"}]
    first = {name: backend.complete(messages, TOOLS, max_tokens=40, on_text=lambda t: None)
             for name, backend in (("plain", plain), ("drafted", drafted))}
    assert first["drafted"].raw == first["plain"].raw
    messages += [{"role": "assistant", "content": first["plain"].raw}, {"role": "user", "content": "and more"}]
    second = drafted.complete(messages, TOOLS, max_tokens=20, on_text=lambda t: None)
    full = len(drafted.encode_prompt(render_conversation(messages, TOOLS)))
    assert second.tokens_in < full // 2 and drafted.prompts.last_reused > full // 2
    assert second.raw == plain.complete(messages, TOOLS, max_tokens=20, on_text=lambda t: None).raw


def test_bad_drafter_fails_fast(checkpoint, tmp_path):
    with pytest.raises(BackendUnavailable, match="cannot use the drafter"):
        MlxBackend(str(checkpoint), drafter_path=str(tmp_path))


def test_a_checkpoint_template_that_differs_is_used_and_announced(checkpoint, tmp_path):
    """A fine-tuned variant's template (here: no empty thought channel in the generation prompt) wins."""
    variant = shutil.copytree(checkpoint, tmp_path / "variant")
    (variant / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for m in messages %}<|turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
        "{{ m.content | trim }}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}")
    backend = MlxBackend(str(variant))
    assert backend.format.source == str(variant) and "checkpoint" in backend.describe()
    assert len(backend.notices) == 1 and "differs from the built-in" in backend.notices[0]
    messages = [{"role": "user", "content": "def add(a, b):"}]
    turn = backend.complete(messages, TOOLS, max_tokens=2, on_text=lambda t: None)
    expected = "<bos><|turn>user\ndef add(a, b):<turn|>\n<|turn>model\n"
    assert turn.tokens_in == len(backend.encode_prompt(expected))
    assert MlxBackend(str(checkpoint)).format.source == "built-in"  # ships no template: ours
