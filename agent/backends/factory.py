"""Build the configured backend, wrapped for recording when asked."""
from __future__ import annotations

from typing import Callable

from agent.backends import Backend, BackendUnavailable
from agent.backends.record import RecordingBackend
from agent.config import Config


def make_backend(config: Config, ask: Callable[[str], bool] | None = None) -> Backend:
    """Raises BackendUnavailable with an actionable message when the backend cannot start. `ask` confirms a
    download of missing weights (None: headless, only `config.download` allows it)."""
    backend: Backend
    if config.backend == "replay":
        from agent.backends.replay import ReplayBackend

        if not config.replay:
            raise BackendUnavailable("the replay backend needs a transcript: --replay FILE.jsonl")
        backend = ReplayBackend(config.replay, delay=config.replay_delay, thinking=config.thinking)
    elif config.backend == "openai":
        from agent.backends.openai import OpenAIBackend

        backend = OpenAIBackend(config.base_url, config.model_name, config.api_key_env, thinking=config.thinking)
    else:
        from agent.backends.mlx import MlxBackend
        from agent.weights import WeightsError, resolve

        try:
            model, drafter = resolve(config.model, config.drafter, download=config.download, ask=ask)
        except WeightsError as exc:
            raise BackendUnavailable(str(exc)) from None
        backend = MlxBackend(model, drafter_path=drafter, kv_bits=config.kv_bits, thinking=config.thinking)
    return RecordingBackend(backend, config.record) if config.record else backend
