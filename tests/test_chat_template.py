"""The checkpoint-template probe: a model directory's own chat template is used when it renders differently."""
import json
import os

import pytest

from agent.chat_format import render_conversation
from agent.chat_template import JinjaFormat, checkpoint_template, select_format

# A template of our own (ChatML-like), certainly different from Gemma 4's.
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content if m.content is string else m.content "
          "| tojson }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_no_template_means_the_built_in_format(tmp_path):
    chosen = select_format(tmp_path)
    assert chosen.render is render_conversation and chosen.source == "built-in" and chosen.notice is None


def test_a_differing_template_file_is_detected_and_used(tmp_path):
    (tmp_path / "chat_template.jinja").write_text(CHATML)
    chosen = select_format(tmp_path)
    assert chosen.source == str(tmp_path) and "differs from the built-in" in chosen.notice
    assert chosen.render(MESSAGES, None) == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n" \
                                            "<|im_start|>assistant\n"


@pytest.mark.parametrize("field", [CHATML, [{"name": "tool_use", "template": "x"},
                                            {"name": "default", "template": CHATML}]])
def test_the_tokenizer_config_field_is_read(tmp_path, field):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": field,
                                                                "bos_token": {"content": "<s>"}}))
    source, specials = checkpoint_template(tmp_path)
    assert source == CHATML and specials == {"bos_token": "<s>", "eos_token": "<eos>"}
    assert select_format(tmp_path).source == str(tmp_path)


def test_a_broken_template_keeps_the_built_in_format_and_says_why(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}")
    chosen = select_format(tmp_path)
    assert chosen.render is render_conversation and "does not compile" in chosen.notice
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('no tools allowed') }}")
    assert "no tools allowed" in select_format(tmp_path).notice


def test_the_template_is_sandboxed():
    unsafe = JinjaFormat("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception, match="unsafe|failed to render"):
        unsafe(MESSAGES)


TEMPLATE_DIR = os.environ.get("GEMMA_AGENT_TEMPLATE_DIR")


@pytest.mark.skipif(not TEMPLATE_DIR, reason="set GEMMA_AGENT_TEMPLATE_DIR to the official template's directory")
def test_the_official_template_keeps_ours_and_a_revision_of_it_wins(tmp_path):
    source, _ = checkpoint_template(TEMPLATE_DIR)
    (tmp_path / "chat_template.jinja").write_text(source)
    assert select_format(tmp_path).source == "built-in" and select_format(tmp_path).notice is None
    revised = source.replace("{{- '<|channel>thought\\n<channel|>' -}}", "")  # like the E2B/E4B templates
    assert revised != source
    (tmp_path / "chat_template.jinja").write_text(revised)
    chosen = select_format(tmp_path)
    assert chosen.source == str(tmp_path) and "differs" in chosen.notice
    assert chosen.render(MESSAGES, None).endswith("<|turn>model\n")


def test_generation_tags_and_transformers_helpers_are_understood():
    source = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
              "{% endgeneration %}{% else %}{{ m.content | tojson }}{% endif %}{% endfor %}"
              "{{ strftime_now('%Y') | length }}")
    rendered = JinjaFormat(source)([{"role": "user", "content": "ü"}, {"role": "assistant", "content": "ok"}])
    assert rendered == '"ü"ok4'
