"""Build the configured backend, wrapped for recording when asked."""
from __future__ import annotations

from agent.backends import Backend
from agent.backends.record import RecordingBackend
from agent.config import Config


def make_backend(config: Config) -> Backend:
    """Raises BackendUnavailable with an actionable message when the backend cannot start."""
    backend: Backend
    if config.backend == "replay":
        from agent.backends.replay import ReplayBackend
        from agent.backends import BackendUnavailable

        if not config.replay:
            raise BackendUnavailable("the replay backend needs a transcript: --replay FILE.jsonl")
        backend = ReplayBackend(config.replay, delay=config.replay_delay, thinking=config.thinking)
    elif config.backend == "openai":
        from agent.backends.openai import OpenAIBackend

        backend = OpenAIBackend(config.base_url, config.model_name, config.api_key_env, thinking=config.thinking)
    else:
        from agent.backends.mlx import MlxBackend

        backend = MlxBackend(config.model, drafter_path=config.drafter, kv_bits=config.kv_bits,
                             thinking=config.thinking)
    return RecordingBackend(backend, config.record) if config.record else backend
