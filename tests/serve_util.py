"""Start the real `gemma-agent serve` in a subprocess on a free loopback port (shared by the serve tests)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests/fixtures/draft_pair/target"
DRAFTER = ROOT / "tests/fixtures/draft_pair/drafter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, headers: dict | None = None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running_server(*args: str, env: dict | None = None, startup: float = 60.0):
    """Yield the base URL (http://127.0.0.1:PORT) of a running `gemma-agent serve ARGS`; stopped afterwards."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--port", str(port), *args], cwd=ROOT,
                               env={**os.environ, **(env or {})}, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"serve exited {process.returncode}: {log.read()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("serve did not start listening in time") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def write_transcript(path: Path, outputs: list[str]) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return str(path)
