"""The agent's loop, format and server backends work where MLX cannot be imported (a machine without it)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLOCK_MLX = """
import importlib.abc, sys

class NoMLX(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mlx" or name.startswith("mlx."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this test runs without MLX)")
        return None

sys.meta_path.insert(0, NoMLX())
"""


def run_without_mlx(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "without_mlx.py"
    script.write_text(BLOCK_MLX + textwrap.dedent(code), encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_blocker_really_blocks_mlx(tmp_path):
    result = run_without_mlx("import mlx_model\n", tmp_path)
    assert result.returncode != 0 and "blocked: this test runs without MLX" in result.stderr


def test_session_format_parser_and_server_backends_import_and_run_without_mlx(tmp_path):
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("\n".join(json.dumps(raw) for raw in [
        'Reading.<|tool_call>call:mcp:x:echo(text=<|"|>hi<|"|>)<turn|>',  # recovered: parenthesized, namespaced
        "Echoed.",
    ]) + "\n", encoding="utf-8")
    result = run_without_mlx(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import agent.session, agent.backends.openai, agent.backends.replay, agent.chat_template
        from agent.backends.openai import OpenAIBackend, to_openai_messages
        from agent.backends.replay import ReplayBackend
        from agent.session import Session

        class Echo:
            def declarations(self):
                return [{{"name": "echo", "description": "Echo text.", "parameters": {{
                    "type": "object", "properties": {{"text": {{"type": "string"}}}}, "required": ["text"]}}}}]

            def call(self, name, arguments):
                return arguments["text"]

        session = Session(ReplayBackend({str(transcript)!r}), Echo(), "You echo.")
        outcome = session.ask("echo hi")
        OpenAIBackend("http://127.0.0.1:9/v1", "m")
        assert to_openai_messages(session.messages)[2]["tool_calls"][0]["function"]["name"] == "echo"
        assert not [name for name in sys.modules if name == "mlx" or name.startswith(("mlx.", "mlx_model"))]
        print(outcome.reason, session.usage.recovered_calls, session.messages[-2]["content"])
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["finished", "3", "hi"]
