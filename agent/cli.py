"""The `gemma-agent` command line: one subcommand per module, registered in COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each entry is a module exposing `add_parser(subparsers)`; the parser it adds sets `func`
# (called with the parsed args, returning the exit code).
COMMANDS = [
    "agent.commands.repl",
    "agent.commands.fix",
    "agent.commands.hook",
    "agent.commands.generate",
    "agent.commands.convert",
    "agent.commands.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-agent",
        description="A local coding agent running Gemma 4 12B through MLX. Nothing leaves the machine.",
        epilog="Without a command, gemma-agent starts the interactive REPL (the same as `gemma-agent repl`); "
               "`gemma-agent COMMAND --help` explains each command's flags.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["repl", *argv]  # bare `gemma-agent [flags]` starts the REPL
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
