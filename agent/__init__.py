"""gemma-agent: the agent loop, model backends, context management and the CLI."""
