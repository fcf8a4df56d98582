"""The `mlx` backend: Gemma 4 in-process through `mlx_model`, one KV cache per session reused across turns."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.backends import BackendError, BackendUnavailable, Completion, TextSink
from mlx_model.chat_format import STOP_STRINGS, render_conversation

NO_WEIGHTS_HELP = (
    "Get weights: download google/gemma-4-12B-it from Hugging Face (e.g. `huggingface-cli download "
    "google/gemma-4-12B-it --local-dir ~/models/gemma-4-12B-it`), convert them with `gemma-agent convert "
    "~/models/gemma-4-12B-it ~/models/gemma-4-12b-mlx --bits 4`, then pass `--model ~/models/gemma-4-12b-mlx` or set "
    "GEMMA_AGENT_MODEL or `model = ...` in .gemma-agent.toml. Or use a server: "
    "`--backend openai --base-url http://127.0.0.1:8080/v1`."
)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class MlxBackend:
    """Keeps the ids held by the cache; each turn feeds only what follows their longest common prefix."""

    name = "mlx"

    def __init__(self, model_path: str | None):
        if not model_path:
            raise BackendUnavailable(f"no model configured for the mlx backend. {NO_WEIGHTS_HELP}")
        path = Path(model_path).expanduser()
        if not path.is_dir():
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
        self.runtime = mlx_model
        self.path = path
        self.cache = mlx_model.make_cache(self.model)
        self.cached_ids: list[int] = []
        stops = {self.tokenizer.token_to_id(s) for s in STOP_STRINGS}
        self.stop_ids = tuple((stops | set(self.tokenizer.eos_ids)) - {None})

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a rendered prompt; the leading `<bos>` becomes the tokenizer's BOS id."""
        bos = "<bos>"
        if text.startswith(bos) and self.tokenizer.bos_id is not None:
            return [self.tokenizer.bos_id, *self.tokenizer.encode(text[len(bos) :])]
        return self.tokenizer.encode(text)

    def _reuse_cache(self, prompt: list[int]) -> list[int]:
        """Trim the cache to the common prefix with `prompt` and return the ids still to feed."""
        keep = common_prefix_length(self.cached_ids, prompt)
        if keep == len(prompt):  # always feed at least one token so there are logits to sample from
            keep -= 1
        excess = self.cache_offset() - keep
        if excess > 0 and self.cache.trim(excess) != excess:
            self.cache, keep = self.runtime.make_cache(self.model), 0  # this layer type cannot roll back
        self.cached_ids = prompt[:keep]
        return prompt[keep:]

    def cache_offset(self) -> int:
        return int(getattr(self.cache, "offset", len(self.cached_ids)))

    def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int, on_text: TextSink
    ) -> Completion:
        prompt = self.encode_prompt(render_conversation(messages, tools))
        todo = self._reuse_cache(prompt)
        generated: list[int] = []
        decoder = self.runtime.StreamingDecoder(self.tokenizer)
        try:
            for token in self.runtime.stream_generate(
                self.model, todo, max_tokens=max_tokens, stop_ids=self.stop_ids, cache=self.cache
            ):
                generated.append(int(token))
                piece = decoder.add(int(token))
                if piece:
                    on_text(piece)
            tail = decoder.flush()
            if tail:
                on_text(tail)
        except KeyboardInterrupt:
            self.cache, self.cached_ids = self.runtime.make_cache(self.model), []  # cache state unknown now
            raise
        except Exception as exc:
            self.cache, self.cached_ids = self.runtime.make_cache(self.model), []
            raise BackendError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        # The cache now holds the prompt and every generated token but the last.
        self.cached_ids = prompt + generated[:-1]
        raw = self.tokenizer.decode(generated)
        return Completion(raw=raw, tokens_in=len(todo), tokens_out=len(generated))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def describe(self) -> str:
        return f"mlx, model {self.path} ({len(self.cached_ids)} tokens cached)"
