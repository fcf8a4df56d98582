"""Subcommands of the gemma-agent CLI."""
