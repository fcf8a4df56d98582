"""The Starlette application: routes, API-key check, JSON parsing and each API's error shape."""
from __future__ import annotations

import contextlib
import hmac
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.serve import anthropic_api, openai_api, responses_api
from agent.serve.engine import Engine
from agent.serve.errors import ApiError, error_response
from agent.serve.generation import Generation

MAX_BODY = 32 << 20  # bytes; larger request bodies are refused with 413


def _is_anthropic(request: Request) -> bool:
    return request.url.path.startswith("/v1/messages")


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"request body of {len(raw)} bytes exceeds the {MAX_BODY} byte limit")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _check_key(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY or x-api-key: KEY)",
                       code="invalid_api_key")


def _sse(pairs: AsyncIterator[Any]) -> EventSourceResponse:
    """Stream str payloads as `data:` lines and (event, data) pairs as named events."""
    async def events():
        async for item in pairs:
            yield {"event": item[0], "data": item[1]} if isinstance(item, tuple) else {"data": item}
    return EventSourceResponse(events(), ping=15)


def build_app(engine: Engine, api_key: str | None = None) -> Starlette:
    model = engine.model_id

    def endpoint(handler: Callable[[Request, dict], Awaitable[Response]], body: bool = True):
        async def route(request: Request) -> Response:
            anthropic = _is_anthropic(request)
            try:
                _check_key(request, api_key)
                return await handler(request, await _json_body(request) if body else {})
            except ApiError as exc:
                return error_response(exc, anthropic)
            except Exception as exc:  # an unexpected failure fails this request only
                return error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}"), anthropic)
        return route

    async def start(request_and_stop) -> Generation:
        request, stop = request_and_stop if isinstance(request_and_stop, tuple) else (request_and_stop, [])
        generation = Generation(engine, request, stop)
        await generation.start()
        return generation

    def generating(parse, streamed, whole):
        """A route that parses the body into a generation request, then streams (SSE) or returns the whole."""
        async def handler(request: Request, body: dict) -> Response:
            generation = await start(parse(body, engine))
            if body.get("stream"):
                return _sse(streamed(generation, body))
            return JSONResponse(await whole(generation, body))
        return handler

    def include_usage(body: dict) -> bool:
        return bool((body.get("stream_options") or {}).get("include_usage"))

    chat = generating(openai_api.chat_request,
                      lambda g, body: openai_api.chat_chunks(g, model, include_usage(body)),
                      lambda g, body: openai_api.chat_completion(g, model))
    completions = generating(openai_api.completion_request, lambda g, body: openai_api.completion_chunks(g, model),
                             lambda g, body: openai_api.completion(g, model))
    responses = generating(responses_api.responses_request,
                           lambda g, body: responses_api.response_events(g, model, body),
                           lambda g, body: responses_api.response(g, model, body))
    messages = generating(anthropic_api.messages_request, lambda g, body: anthropic_api.message_events(g, model),
                          lambda g, body: anthropic_api.message(g, model))

    async def count_tokens(request: Request, body: dict) -> Response:
        gen_request = anthropic_api.count_request(body, engine)
        return JSONResponse({"input_tokens": engine.prompt_tokens(gen_request)})

    async def list_models(request: Request, body: dict) -> Response:
        return JSONResponse(openai_api.models(model))

    async def health(request: Request, body: dict) -> Response:
        return JSONResponse(engine.health())

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(404, f"no route {request.method} {request.url.path}"), _is_anthropic(request))

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}"),
                              _is_anthropic(request))

    routes = [
        Route("/v1/chat/completions", endpoint(chat), methods=["POST"]),
        Route("/v1/completions", endpoint(completions), methods=["POST"]),
        Route("/v1/responses", endpoint(responses), methods=["POST"]),
        Route("/v1/messages", endpoint(messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", endpoint(count_tokens), methods=["POST"]),
        Route("/v1/models", endpoint(list_models, body=False), methods=["GET"]),
        Route("/health", endpoint(health, body=False), methods=["GET"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        engine.close()

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method}, lifespan=lifespan)
