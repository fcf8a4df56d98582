"""A local stand-in for the Hugging Face hub's HTTP API (what `huggingface_hub` 2.x calls to download a repo):
repo info, the file tree and `resolve` downloads (HEAD and ranged GET). It serves directories from disk and
records every request, so tests can check what was fetched without network."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repos: dict[str, Path], commit: str = "c" * 40):
        self.repos, self.commit, self.requests = repos, commit, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_HEAD(self):
                hub.serve(self, body=False)

            def do_GET(self):
                hub.serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    def serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path))
        for repo in self.repos:
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self._json(handler, {"id": repo, "sha": self.commit, "siblings": [
                    {"rfilename": name} for name in self.files(repo)]})
            if path.startswith(f"/api/models/{repo}/tree/"):
                return self._json(handler, [{"type": "file", "path": name, "size": p.stat().st_size,
                                             "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                                            for name, p in self.files(repo).items()])
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix):].split("/", 1)[1]
                file = self.files(repo).get(name)
                if file is None:
                    break
                data = file.read_bytes()
                start = 0
                if handler.headers.get("Range", "").startswith("bytes="):
                    start = int(handler.headers["Range"][6:].split("-")[0])
                handler.send_response(206 if start else 200)
                handler.send_header("X-Repo-Commit", self.commit)
                handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                handler.send_header("Content-Length", str(len(data) - start))
                handler.end_headers()
                if body:
                    handler.wfile.write(data[start:])
                return None
        handler.send_response(404)
        handler.send_header("X-Error-Code", "RepoNotFound")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, payload) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
