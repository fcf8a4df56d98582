"""The `mlx` backend: Gemma 4 in-process through `mlx_model`, one KV cache per session reused across turns."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.backends import BackendError, BackendUnavailable, Completion, TextSink
from agent.call_parser import parse_model_output
from agent.chat_format import STOP_STRINGS, opens_thought
from agent.chat_template import select_format
from agent.stream import VisibleText

NO_WEIGHTS_HELP = (
    "Get weights: leave --model unset (or pass a hub repo id) and add --yes to download google/gemma-4-12B-it "
    "and convert it once; or `hf download google/gemma-4-12B-it --local-dir ~/models/gemma-4-12B-it` and "
    "`gemma-agent convert ~/models/gemma-4-12B-it ~/models/gemma-4-12b-mlx --bits 4`, then pass `--model "
    "~/models/gemma-4-12b-mlx` (or a .gguf file, or ollama:NAME) or set GEMMA_AGENT_MODEL or `model = ...` in "
    ".gemma-agent.toml. Or use a server: `--backend openai --base-url http://127.0.0.1:8080/v1`."
)


class MlxBackend:
    """One `PromptCache` per session: each turn prefills only what follows the longest cached prefix, with the
    drafter when one is configured. The history is append-only, but the exact format drops the previous
    generation prompt's empty thought channel, so the cache rolls back to there and re-prefills the last reply.
    Prompts use the built-in format unless the checkpoint ships a template that renders differently
    (agent.chat_template); `notices` says so."""

    name = "mlx"

    def __init__(self, model_path: str | None, *, drafter_path: str | None = None, kv_bits: int | None = None,
                 thinking: bool = False):
        if not model_path:
            raise BackendUnavailable(f"no model configured for the mlx backend. {NO_WEIGHTS_HELP}")
        path = Path(model_path).expanduser()
        if not path.exists():
            raise BackendUnavailable(f"model directory {path} does not exist. {NO_WEIGHTS_HELP}")
        try:
            import mlx_model
        except ImportError as exc:
            raise BackendUnavailable(f"the mlx backend cannot load ({exc}); reinstall gemma-agent") from None
        try:
            self.model, self.tokenizer = mlx_model.load(str(path))
        except mlx_model.ModelLoadError as exc:
            raise BackendUnavailable(f"cannot load {path}: {exc}. {NO_WEIGHTS_HELP}") from None
        if self.tokenizer is None:
            raise BackendUnavailable(f"{path} has no tokenizer (tokenizer.json); copy it from the Hugging Face download")
        self.drafter = None
        if drafter_path:
            try:
                self.drafter = mlx_model.load_drafter(Path(drafter_path).expanduser())
                mlx_model.assistant.check_pair(self.model.config, self.drafter)
            except (mlx_model.ModelLoadError, mlx_model.ConfigError) as exc:
                raise BackendUnavailable(f"cannot use the drafter {drafter_path}: {exc}") from None
        self.runtime = mlx_model
        self.path = path
        self.thinking = thinking
        self.format = select_format(path)
        self.notices = [self.format.notice] if self.format.notice else []
        self.kv_bits = kv_bits
        self.prompts = mlx_model.PromptCache(self.model, kv_bits=kv_bits)
        stops = {self.tokenizer.token_to_id(s) for s in STOP_STRINGS}
        self.stop_ids = tuple((stops | set(self.tokenizer.eos_ids)) - {None})

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a rendered prompt; the leading `<bos>` becomes the tokenizer's BOS id."""
        bos = "<bos>"
        if text.startswith(bos) and self.tokenizer.bos_id is not None:
            return [self.tokenizer.bos_id, *self.tokenizer.encode(text[len(bos) :])]
        return self.tokenizer.encode(text)

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int, on_text: TextSink,
        on_thinking: TextSink | None = None,
    ) -> Completion:
        text = self.format.render(messages, tools, thinking=self.thinking)
        prompt = self.encode_prompt(text)
        visible = VisibleText(on_text, on_thinking, in_thought=opens_thought(text))
        generated: list[int] = []
        decoder = self.runtime.StreamingDecoder(self.tokenizer)
        try:
            for token in self.prompts.stream_generate(prompt, max_tokens=max_tokens, stop_ids=self.stop_ids,
                                                      drafter=self.drafter):
                generated.append(int(token))
                visible.feed(decoder.add(int(token)))
            visible.feed(decoder.flush())
        except KeyboardInterrupt:
            self.prompts.clear()  # the cache state is unknown after an interrupted step
            raise
        except Exception as exc:
            self.prompts.clear()
            raise BackendError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            visible.flush()
        raw = self.tokenizer.decode(generated)
        turn = parse_model_output(raw, {tool["name"] for tool in tools}, in_thought=opens_thought(text))
        return Completion.of(turn, raw=raw, tokens_in=self.prompts.last_prefilled, tokens_out=len(generated))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def describe(self) -> str:
        extras = [f"KV {self.kv_bits}-bit" if self.kv_bits else "", "drafter" if self.drafter else "",
                  "thinking" if self.thinking else "",
                  "checkpoint chat template" if self.format.source != "built-in" else ""]
        extra = ", ".join(e for e in extras if e)
        return (f"mlx, model {self.path}{' (' + extra + ')' if extra else ''}, "
                f"{len(self.prompts.tokens)} tokens cached")
