"""Which prompt format a session uses: ours (agent.chat_format), unless the checkpoint's own template differs.

A model directory may ship its chat template (`chat_template.jinja`, or the `chat_template` field of
`tokenizer_config.json`). At load time a fixed set of probe conversations is rendered with it (jinja2, sandboxed,
with the options and helpers transformers gives templates) and with ours; if any probe differs (a fine-tuned
variant, a later revision of the template), the checkpoint's template renders that session's prompts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from agent.chat_format import BOS, EOS, render_conversation, template_messages, template_tools

Renderer = Callable[..., str]  # (messages, tools, *, add_generation_prompt, thinking) -> prompt text


class TemplateError(Exception):
    """A checkpoint's chat template cannot be read or rendered."""


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers' `tojson` (jinja's own escapes HTML characters)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str) -> Any:
    """A jinja2 template in the environment transformers renders chat templates with."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # a declared dependency: only a broken install gets here
        raise TemplateError(f"jinja2 is needed to render a checkpoint's chat template ({exc})") from None
    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` (training templates mark the model's tokens): the body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols, Generation])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the chat template does not compile: {exc}") from None


class JinjaFormat:
    """Renders prompts with a chat template's jinja source, from our messages and tool declarations."""

    def __init__(self, source: str, *, bos_token: str = BOS, eos_token: str = EOS):
        self.template = compile_template(source)
        self.specials = {"bos_token": bos_token, "eos_token": eos_token}

    def __call__(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
                 add_generation_prompt: bool = True, thinking: bool = False) -> str:
        import jinja2

        try:
            return self.template.render(messages=template_messages(messages), tools=template_tools(tools),
                                        add_generation_prompt=add_generation_prompt, enable_thinking=thinking,
                                        **self.specials)
        except (jinja2.TemplateError, TemplateError, TypeError, ValueError, KeyError) as exc:
            raise TemplateError(f"the chat template failed to render: {exc}") from None


def checkpoint_template(model_dir: str | Path) -> tuple[str, dict[str, str]] | None:
    """The chat template a model directory ships, with its bos/eos token texts; None when it ships none."""
    directory = Path(model_dir)
    config: dict[str, Any] = {}
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TemplateError(f"cannot read {config_path}: {exc}") from None
    specials = {f"{name}_token": _token_text(config.get(f"{name}_token"), default)
                for name, default in (("bos", BOS), ("eos", EOS))}
    jinja_path = directory / "chat_template.jinja"
    if jinja_path.is_file():
        try:
            return jinja_path.read_text(encoding="utf-8"), specials
        except OSError as exc:
            raise TemplateError(f"cannot read {jinja_path}: {exc.strerror}") from None
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
        source = next((t.get("template") for t in source if isinstance(t, dict) and t.get("name") == "default"), None)
    return (source, specials) if isinstance(source, str) and source else None


def _token_text(value: Any, default: str) -> str:
    if isinstance(value, dict):  # AddedToken as saved by transformers
        value = value.get("content")
    return value if isinstance(value, str) else default


_READ = {"name": "read_file", "description": "Read a text file of the repository.", "parameters": {
    "type": "object", "properties": {
        "path": {"type": "string", "description": "Path relative to the repository root."},
        "start_line": {"type": "integer", "description": "First line to show (1-based)."},
        "Mode": {"type": "string", "enum": ["text", "hex"], "nullable": True}},
    "required": ["path"]}}
_STATUS = {"name": "git_status", "description": "Show the working tree status.",
           "parameters": {"type": "object", "properties": {}, "required": []}}
_EDIT = {"name": "edit_file", "description": "Replace text in a file.", "parameters": {
    "type": "object", "properties": {
        "edits": {"type": "array", "items": {"type": "object", "properties": {
            "old": {"type": "string"}, "new": {"type": "string"}}, "required": ["old", "new"]}},
        "options": {"type": "object", "properties": {"dry_run": {"type": "boolean"}}}},
    "required": ["edits"]}}
_PROBE_TOOLS = [_READ, _STATUS, _EDIT]
_CALL = {"name": "read_file", "arguments": {"path": 'src/app.py', "start_line": 3}}
_EDIT_CALL = {"name": "edit_file", "arguments": {"edits": [{"old": 'x = "a"\n', "new": "x = {'b': 1}\n"}]}}
_PROBE_CONVERSATIONS: list[tuple[list[dict[str, Any]], bool]] = [
    ([{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": "Fix the bug."}], False),
    ([{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": "Fix the bug."},
      {"role": "assistant", "content": "Reading it."}, {"role": "assistant", "content": "", "tool_calls": [_CALL]},
      {"role": "tool", "name": "read_file", "content": "def f():\n    return 1\n"}], False),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
      {"role": "assistant", "content": "", "tool_calls": [_CALL, {"name": "git_status", "arguments": {}}]},
      {"role": "tool", "name": "read_file", "content": "ok"}, {"role": "tool", "name": "git_status",
                                                             "content": {"clean": True, "branch": "main"}},
      {"role": "assistant", "content": "Done: ünïcode {braces} \"quotes\"."},
      {"role": "user", "content": "Now edit."}], False),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
      {"role": "assistant", "content": "", "tool_calls": [_EDIT_CALL]},
      {"role": "tool", "name": "edit_file", "content": "applied"}, {"role": "user", "content": "thanks"}], False),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
      {"role": "assistant", "content": "", "tool_calls": [_CALL]},
      {"role": "tool", "name": "read_file", "content": "x"}], True),
]


def probe_differences(renderer: Renderer) -> list[int]:
    """Indexes of the probe conversations that `renderer` renders differently from ours."""
    return [index for index, (messages, thinking) in enumerate(_PROBE_CONVERSATIONS)
            if renderer(messages, _PROBE_TOOLS, thinking=thinking)
            != render_conversation(messages, _PROBE_TOOLS, thinking=thinking)]


@dataclass
class PromptFormat:
    """The renderer a session uses and why: `source` is "built-in" or the checkpoint template's path."""

    render: Renderer
    source: str
    notice: str | None = None


def select_format(model_dir: str | Path) -> PromptFormat:
    """Ours, unless `model_dir` ships a chat template that renders any probe differently: then that template
    (with a notice saying so). A template that cannot be rendered keeps ours, with a notice."""
    try:
        found = checkpoint_template(model_dir)
        if found is None:
            return PromptFormat(render_conversation, "built-in")
        checkpoint = JinjaFormat(found[0], **found[1])
        differing = probe_differences(checkpoint)
    except TemplateError as exc:
        return PromptFormat(render_conversation, "built-in",
                            f"ignoring the chat template of {model_dir}: {exc}; using the built-in Gemma 4 format")
    if not differing:
        return PromptFormat(render_conversation, "built-in")
    return PromptFormat(checkpoint, str(model_dir), (
        f"the chat template shipped with {model_dir} differs from the built-in Gemma 4 format on "
        f"{len(differing)} of {len(_PROBE_CONVERSATIONS)} probe conversations; using the checkpoint's template"))
