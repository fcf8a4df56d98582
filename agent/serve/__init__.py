"""`gemma-agent serve`: OpenAI- and Anthropic-compatible HTTP APIs over one shared engine.

`app` builds the Starlette application; `engine` runs the model (batched decoding over per-request caches that
share stored prefix blocks) or a replay transcript; `openai_api`, `responses_api` and `anthropic_api` translate
each API's requests and responses; `turns` splits streamed model output into text and tool calls; `fmt` is the
one place that knows the Gemma 4 conversation format.
"""
