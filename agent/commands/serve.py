"""`gemma-agent serve`: the local engine behind OpenAI- and Anthropic-compatible HTTP APIs."""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from agent.backends import BackendUnavailable
from agent.commands.common import error
from agent.config import ConfigError, load_config

DESCRIPTION = """Serve the model over HTTP for editors and agents: OpenAI /v1/chat/completions, /v1/completions,
/v1/responses and /v1/models; Anthropic /v1/messages and /v1/messages/count_tokens; GET /health.
Concurrent requests share one model and one prefix cache and are decoded together.
Binds to 127.0.0.1 unless --host says otherwise; any other address needs --api-key-env."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve OpenAI- and Anthropic-compatible APIs locally",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("mlx", "replay"), help="mlx: the model in-process (default); "
                        "replay: serve a transcript of raw model outputs (for testing clients)")
    parser.add_argument("--model", help="mlx: directory of converted weights (also GEMMA_AGENT_MODEL)")
    parser.add_argument("--drafter", metavar="PATH", help="mlx: MTP drafter directory (speculative decoding)")
    parser.add_argument("--kv-bits", type=int, choices=(8, 4), help="mlx: quantize KV cache pages")
    parser.add_argument("--replay", "--transcript", dest="replay", metavar="FILE",
                        help="replay: JSONL transcript, one raw output per request (implies --backend replay)")
    parser.add_argument("--replay-delay", type=float, metavar="SECONDS", help="replay: pause between chunks")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key-env", metavar="NAME",
                        help="environment variable holding the API key clients must send (Authorization: Bearer "
                             "or x-api-key); required to bind a non-loopback address")
    parser.add_argument("--served-model-name", metavar="NAME",
                        help="model id clients must name (default: the model directory's name, or 'replay')")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="requests decoded together; more wait in a queue (default 8)")
    parser.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            return error(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if not is_loopback(args.host) and not api_key:
        return error(f"refusing to serve on {args.host} without an API key: anyone who can reach it could use "
                     "the model; set a key in an environment variable and pass --api-key-env NAME "
                     "(or bind 127.0.0.1)")
    if not 0 < args.port < 65536:
        return error(f"--port must be from 1 to 65535, got {args.port}")
    if args.max_batch < 1:
        return error("--max-batch must be at least 1")
    backend = "replay" if args.replay and not args.backend else args.backend
    try:
        config = load_config(None, {"backend": backend, "model": args.model, "drafter": args.drafter,
                                    "kv_bits": args.kv_bits, "replay": args.replay,
                                    "replay_delay": args.replay_delay})
    except ConfigError as exc:
        return error(str(exc))
    try:
        engine = make_engine(config, args.served_model_name, args.max_batch)
    except BackendUnavailable as exc:
        return error(str(exc))
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            engine.close()
            return error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    import uvicorn

    from agent.serve.app import build_app

    print(f"gemma-agent: serving {engine.model_id!r} ({engine.describe()}) on http://{args.host}:{args.port}/v1",
          file=sys.stderr)
    uvicorn.run(build_app(engine, api_key), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0


def make_engine(config, served_name: str | None, max_batch: int):
    """The engine for the configured backend; raises BackendUnavailable with an actionable message."""
    from agent.serve.engine import SerialEngine

    if config.backend == "replay":
        from agent.backends.replay import ReplayBackend

        if not config.replay:
            raise BackendUnavailable("the replay backend needs a transcript: --replay FILE.jsonl")
        return SerialEngine(ReplayBackend(config.replay, delay=config.replay_delay), served_name or "replay")
    if config.backend != "mlx":
        raise BackendUnavailable(f"serve runs the mlx or replay backend, not {config.backend!r}")
    from agent.backends.mlx import MlxBackend
    from agent.serve.mlx_engine import MlxEngine

    backend = MlxBackend(config.model, drafter_path=config.drafter, kv_bits=config.kv_bits)
    return MlxEngine(backend, served_name or Path(config.model).expanduser().resolve().name, max_batch=max_batch)
