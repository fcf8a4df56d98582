"""Where weights come from: Ollama's store, the Hugging Face cache, offline and disk-full messages, the default
model's confirmation, and conversions that are interrupted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from mlx_model.convert import convert_checkpoint
from mlx_model.sources import HubPlan, HubRequest, Local, SourceError, fetch, locate
from tests.model_refs import build_reference, make_tokenizer
from tests.test_model_loading import SMALL

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    build_reference(path, SMALL, multimodal=True)
    make_tokenizer(path)
    return path


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


# -- Ollama ------------------------------------------------------------------------------------------------------

def fake_ollama(root: Path, name: str, tag: str, payload: bytes, namespace: str = "library") -> Path:
    """Lay out a model as Ollama does: a manifest per tag naming content-addressed blobs."""
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    blob = root / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(payload)
    config = root / "blobs" / "sha256-0000"
    config.write_text("{}")
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:0000"},
        "layers": [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:0000", "size": 2},
                   {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
                    "size": len(payload)}]}))
    return blob


def test_ollama_names_resolve_to_their_blob(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    blob = fake_ollama(tmp_path, "gemma4", "12b", b"GGUF" + b"\0" * 60)
    latest = fake_ollama(tmp_path, "gemma4", "latest", b"GGUF" + b"\1" * 60)
    user = fake_ollama(tmp_path, "tiny", "q8", b"GGUF" + b"\2" * 60, namespace="someone")
    assert locate("ollama:gemma4:12b") == Local(blob)
    assert locate("ollama:gemma4") == Local(latest)
    assert locate("ollama:someone/tiny:q8") == Local(user)
    assert locate("ollama:registry.ollama.ai/someone/tiny:q8") == Local(user)
    with pytest.raises(SourceError, match=r"run `ollama pull gemma4:27b`"):
        locate("ollama:gemma4:27b")
    blob.unlink()
    with pytest.raises(SourceError, match="blob .* is missing"):
        locate("ollama:gemma4:12b")


def test_local_specs(tmp_path, checkpoint):
    assert locate(str(checkpoint)) == Local(checkpoint)
    studio = tmp_path / "lmstudio" / "ggml-org" / "gemma-4-12B-it-GGUF"  # LM Studio: publisher/model/*.gguf
    studio.mkdir(parents=True)
    (studio / "gemma-4-12B-it-Q4_K_M.gguf").write_bytes(b"GGUF....")
    (studio / "mmproj-gemma-4-12B-it-f16.gguf").write_bytes(b"GGUF....")
    assert locate(str(studio)) == Local(studio / "gemma-4-12B-it-Q4_K_M.gguf")
    (studio / "gemma-4-12B-it-Q8_0.gguf").write_bytes(b"GGUF....")
    with pytest.raises(SourceError, match="several GGUF files"):
        locate(str(studio))
    assert locate("google/gemma-4-12B-it@main") == HubRequest("google/gemma-4-12B-it", "main")
    assert locate("ggml-org/gemma-4-12B-it-GGUF:Q4_K_M") == HubRequest("ggml-org/gemma-4-12B-it-GGUF", None, "Q4_K_M")
    with pytest.raises(SourceError, match="not a Hugging Face repo id"):
        locate(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="not a GGUF file"):
        locate(str(tmp_path / "notes.txt"))


# -- Hugging Face cache (no network) -----------------------------------------------------------------------------

def fake_hub_cache(cache: Path, repo: str, files: Path, commit: str = "a" * 40) -> Path:
    """huggingface_hub's cache layout: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_repo_from_the_cache_is_converted_once(tmp_path, checkpoint):
    fake_hub_cache(tmp_path / "hub", "google/gemma-4-12B-it", checkpoint)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "GEMMA_AGENT_CACHE": str(tmp_path / "ga"),
           "HOME": str(tmp_path)}
    args = ["generate", "--prompt", "def add", "--max-tokens", "3", "--raw"]  # no --model: the default
    asked = run_cli(args, env, tmp_path)
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    assert "google/gemma-4-12B-it: already downloaded, then convert to 4-bit once" in asked.stderr
    assert "generate --prompt 'def add' --max-tokens 3 --raw --yes" in asked.stderr
    first = run_cli([*args, "--yes"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "converting google/gemma-4-12B-it to 4-bit" in first.stderr and "loaded " in first.stderr
    converted = next((tmp_path / "ga" / "converted").iterdir())
    assert json.loads((converted / "config.json").read_text())["quantization"]["bits"] == 4
    again = run_cli(args, env, tmp_path)  # reused: nothing to confirm, nothing converted
    assert again.returncode == 0 and "converting" not in again.stderr
    assert again.stdout == first.stdout


def test_offline_message_names_the_hf_download_command(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    result = run_cli(["generate", "--prompt", "hi", "--yes"], env, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr
    assert "`hf download google/gemma-4-12B-it --include" in result.stderr


def test_disk_space_is_checked_before_downloading(tmp_path, monkeypatch):
    import mlx_model.sources as sources

    usage = shutil._ntuple_diskusage(10**12, 10**12 - 10**9, 10**9)  # 1 GB free
    monkeypatch.setattr(sources.shutil, "disk_usage", lambda _path: usage)
    monkeypatch.setenv("GEMMA_AGENT_CACHE", str(tmp_path / "ga"))
    plan = HubPlan(HubRequest("google/gemma-4-12B-it"), "b" * 40, {"model.safetensors": 24 * 10**9},
                   missing_bytes=24 * 10**9)
    with pytest.raises(SourceError, match=r"not enough disk space for downloading google/gemma-4-12B-it: 24.0 GB "
                                          r"needed .* 1.0 GB free"):
        fetch(plan)


# -- interrupted conversions -------------------------------------------------------------------------------------

def test_interrupted_convert_leaves_nothing(checkpoint, tmp_path):
    dst = tmp_path / "out"
    seen = []

    def interrupt(name: str) -> None:
        seen.append(name)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(checkpoint, dst, bits=4, on_tensor=interrupt)
    assert not dst.exists() and not (tmp_path / "out.partial").exists()


def test_killed_convert_leaves_nothing_loadable(checkpoint, tmp_path):
    dst = tmp_path / "out"
    script = (f"import os, signal, mlx_model\nfrom mlx_model.convert import convert_checkpoint\nn = []\n"
              f"def kill(name):\n    n.append(name)\n    if len(n) == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"convert_checkpoint({str(checkpoint)!r}, {str(dst)!r}, bits=4, on_tensor=kill)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == -9
    partial = tmp_path / "out.partial"
    assert not dst.exists() and (partial / "model.safetensors").is_file()  # killed mid-write
    with pytest.raises(mlx_model.ModelLoadError):
        mlx_model.load(partial)
    convert_checkpoint(checkpoint, dst, bits=4)  # the next conversion starts afresh
    model, _ = mlx_model.load(dst)
    expected, _ = mlx_model.load(checkpoint)
    mlx_model.quantize_model(expected, 4)
    ids = mx.array([[5, 6, 7, 8]])
    assert np.array_equal(np.array(model(ids)), np.array(expected(ids)))
    assert not partial.exists()


# -- a local hub endpoint (no network) ---------------------------------------------------------------------------

def test_hub_download_fetches_only_needed_files_then_converts(tmp_path, checkpoint):
    from tests.fake_hub import FakeHub

    repo = tmp_path / "repo"
    shutil.copytree(checkpoint, repo)
    (repo / "original").mkdir()  # what a Google repo also holds; not needed here
    (repo / "original" / "consolidated.pth").write_bytes(b"\0" * 4096)
    (repo / "README.md").write_text("# model card")
    with FakeHub({"google/gemma-4-12B-it": repo}) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path),
               "GEMMA_AGENT_CACHE": str(tmp_path / "ga"), "HF_HUB_DISABLE_XET": "1"}
        args = ["generate", "--prompt", "def add", "--max-tokens", "3", "--raw", "--drafter", "none"]
        asked = run_cli(args, env, tmp_path)
        assert asked.returncode == 2, asked.stderr
        size = sum(p.stat().st_size for p in checkpoint.iterdir()) / 1e9
        assert f"google/gemma-4-12B-it: download {size:.1f} GB from huggingface.co" in asked.stderr
        assert "--drafter none --yes`" in asked.stderr
        done = run_cli([*args, "--yes"], env, tmp_path)
        assert done.returncode == 0, done.stderr
    fetched = {path.rsplit("/", 1)[-1] for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    assert "model.safetensors" in fetched and "tokenizer.json" in fetched
    assert not fetched & {"consolidated.pth", "README.md"}
    assert (next((tmp_path / "ga" / "converted").iterdir()) / "config.json").is_file()


def test_repl_asks_before_downloading(tmp_path, checkpoint, monkeypatch):
    from huggingface_hub import constants

    from agent.backends import BackendUnavailable
    from agent.backends.factory import make_backend
    from agent.config import Config

    fake_hub_cache(tmp_path / "hub", "google/gemma-4-12B-it", checkpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("GEMMA_AGENT_CACHE", str(tmp_path / "ga"))
    questions = []

    def decline(question: str) -> bool:
        questions.append(question)
        return False

    with pytest.raises(BackendUnavailable, match="download declined"):
        make_backend(Config(drafter="none"), ask=decline)
    assert "convert to 4-bit once" in questions[0] and not (tmp_path / "ga").exists()
    backend = make_backend(Config(drafter="none"), ask=lambda q: True)
    assert "gemma-4-12B-it" in backend.describe() and backend.drafter is None
    assert make_backend(Config(drafter="none"), ask=None).tokenizer is not None  # converted once: no question
