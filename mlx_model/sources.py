"""Where weights come from: a model spec resolved to a local checkpoint directory or GGUF file.

A spec is one of:
- a directory: Hugging Face layout (Google's checkpoint or any MLX conversion), or an LM Studio model
  directory (MLX files, or a folder holding one model's GGUF);
- a GGUF file;
- `ollama:NAME[:TAG]`: Ollama's local manifest for the model names its GGUF blob, which is read in place;
- a Hugging Face repo id `ORG/NAME[@REVISION]` (`ORG/NAME:QUANT` picks a file of a GGUF repo): fetched through
  `huggingface_hub` into its standard cache (only the files needed), and when the repo holds an original
  (unquantized) checkpoint, converted once at the requested bits into gemma-agent's cache.

`locate` never touches the network; `HubRequest.plan` asks the hub what a download would take (sizes); `fetch`
downloads and converts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

GGUF_MAGIC = b"GGUF"
OLLAMA_REGISTRY, OLLAMA_NAMESPACE = "registry.ollama.ai", "library"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
# What a checkpoint needs from a repo; everything else (original/ PyTorch files, other formats) is skipped.
HUB_FILES = ["config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
             "chat_template.jinja"]
# The same for `hf download --include` (shorter; picks up the same files in Gemma repos).
HF_INCLUDE = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?:@[\w./-]+)?(?::[\w.-]+)?$")
# A 4-bit conversion of a bf16 checkpoint is ~0.28 of its size (4.5 bits per weight with scales and biases).
CONVERTED_FRACTION = {4: 0.3, 8: 0.55, None: 1.0}


class SourceError(ValueError):
    """A model spec that cannot be resolved; the message says what to do."""


@dataclass(frozen=True)
class Local:
    """A checkpoint on this machine: a Hugging Face-layout directory or a GGUF file."""

    path: Path

    @property
    def is_gguf(self) -> bool:
        return self.path.is_file()


@dataclass(frozen=True)
class HubRequest:
    """A Hugging Face repo (optionally at a revision, optionally one GGUF quantization of a GGUF repo)."""

    repo: str
    revision: str | None = None
    quant: str | None = None

    @property
    def spec(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "") + (f":{self.quant}" if self.quant else "")


@dataclass
class HubPlan:
    """What fetching a repo takes: its commit, the files needed with their sizes, the bytes still to download
    (0 when cached) and where the result will be."""

    request: HubRequest
    commit: str
    files: dict[str, int]
    missing_bytes: int
    converted: Path | None = None  # the conversion the fetch writes (None: the download is used directly)
    needs_conversion: bool = False
    config: Path | None = None  # the repo's config.json, fetched while planning (None for a GGUF)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def ready(self) -> bool:
        return self.missing_bytes == 0 and not self.needs_conversion


def locate(spec: str) -> Local | HubRequest:
    """What a spec names, without touching the network."""
    if spec.startswith("ollama:"):
        return Local(ollama_blob(spec[len("ollama:"):]))
    path = Path(spec).expanduser()
    if path.is_dir():
        return Local(_checkpoint_in_dir(path))
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise SourceError(f"{path} is not a GGUF file; pass a model directory, a .gguf file, a Hugging Face "
                                  "repo id or ollama:NAME")
        return Local(path)
    if _REPO_ID.match(spec) and not spec.startswith((".", "~")):
        repo, _, quant = spec.partition(":")
        repo, _, revision = repo.partition("@")
        return HubRequest(repo, revision or None, quant or None)
    raise SourceError(f"{spec}: no such file or directory, and not a Hugging Face repo id (ORG/NAME[@REVISION]) "
                      "or ollama:NAME[:TAG]")


def _checkpoint_in_dir(path: Path) -> Path:
    """A directory with config.json is a checkpoint; one without (LM Studio keeps GGUF models that way) must
    hold exactly one model GGUF (projector files `mmproj*` are skipped)."""
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(p for p in path.glob("*.gguf") if not p.name.lower().startswith("mmproj"))
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        names = ", ".join(p.name for p in ggufs)
        raise SourceError(f"{path} holds several GGUF files ({names}); pass the one to use")
    return path  # the loader names what is missing


def ollama_models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def ollama_blob(name: str) -> Path:
    """The GGUF blob of an Ollama model `NAME[:TAG]` (also `NAMESPACE/NAME` and `HOST/NAMESPACE/NAME`), found
    through Ollama's manifest `manifests/HOST/NAMESPACE/NAME/TAG`."""
    base, _, tag = name.partition(":")
    parts = [p for p in base.split("/") if p]
    if not parts or len(parts) > 3:
        raise SourceError(f"ollama:{name} is not a model name; expected ollama:NAME[:TAG], e.g. ollama:gemma4:12b")
    host, namespace = OLLAMA_REGISTRY, OLLAMA_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    root = ollama_models_dir()
    manifest = root / "manifests" / host / namespace / model / (tag or "latest")
    if not manifest.is_file():
        raise SourceError(f"Ollama has no model {name} in {root} (no {manifest}); run `ollama pull {name}` or set "
                          "OLLAMA_MODELS to Ollama's models directory")
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        raise SourceError(f"{manifest} is not an Ollama manifest naming a model layer") from None
    blob = root / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise SourceError(f"the Ollama blob {blob} named by {manifest} is missing; run `ollama pull {name}` again")
    return blob


# -- Hugging Face hub --------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """gemma-agent's cache of converted checkpoints."""
    return Path(os.environ.get("GEMMA_AGENT_CACHE") or "~/.cache/gemma-agent").expanduser()


def hf_download_command(request: HubRequest, patterns: list[str] | None = None) -> str:
    """The `hf download` command that fetches what gemma-agent needs from a repo on another machine."""
    include = " ".join(f'"{p}"' for p in (HF_INCLUDE if patterns in (None, HUB_FILES) else patterns))
    revision = f" --revision {request.revision}" if request.revision else ""
    local = request.repo.split("/")[-1]
    return f"hf download {request.repo}{revision} --include {include} --local-dir {local}"


def offline_message(request: HubRequest, reason: str, patterns: list[str] | None = None) -> str:
    return (f"cannot download {request.spec}: {reason}. On a machine with network run "
            f"`{hf_download_command(request, patterns)}`, copy the directory here and pass it with --model")


def plan(request: HubRequest, *, bits: int | None = 4, local_only: bool = False) -> HubPlan:
    """Ask the hub (or, offline or with `local_only`, the local cache) which files `request` needs and how many
    bytes are missing."""
    from huggingface_hub import snapshot_download

    patterns = HUB_FILES if request.quant is None else [f"*{request.quant}*.gguf"]
    if local_only:
        return _plan_offline(request, patterns, bits, None)
    try:
        infos = snapshot_download(request.repo, revision=request.revision, allow_patterns=patterns, dry_run=True)
    except Exception as exc:  # offline, unreachable, missing repo or revision, gated, ...
        return _plan_offline(request, patterns, bits, exc)
    if not infos:
        raise SourceError(_nothing_usable(request))
    if request.quant is not None and len(infos) > 1:
        names = ", ".join(sorted(i.filename for i in infos))
        raise SourceError(f"{request.spec} matches several GGUF files ({names}); name one more precisely")
    files = {info.filename: int(info.file_size or 0) for info in infos}
    missing = sum(int(info.file_size or 0) for info in infos if info.will_download)
    commit = infos[0].commit_hash
    config = None
    if "config.json" in files:  # small; says whether the repo is already an MLX conversion
        from huggingface_hub import hf_hub_download

        config = Path(hf_hub_download(request.repo, "config.json", revision=commit))
        missing -= files["config.json"] if any(i.filename == "config.json" and i.will_download for i in infos) else 0
    return _finish_plan(request, commit, files, missing, bits, config=config)


def _plan_offline(request: HubRequest, patterns: list[str], bits: int | None, error: Exception | None) -> HubPlan:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, GatedRepoError):
        raise SourceError(f"{request.repo} is gated: accept its license on huggingface.co and log in with "
                          "`hf auth login`, then try again") from None
    if isinstance(error, RepositoryNotFoundError):
        raise SourceError(f"no Hugging Face repo {request.repo} (or it is private: log in with `hf auth login`)") \
            from None
    if isinstance(error, RevisionNotFoundError):
        raise SourceError(f"{request.repo} has no revision {request.revision}") from None
    try:
        snapshot = Path(snapshot_download(request.repo, revision=request.revision, allow_patterns=patterns,
                                          local_files_only=True))
    except Exception:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if error is None:
            raise SourceError(f"{request.spec} is not in the Hugging Face cache") from None
        reason = "HF_HUB_OFFLINE is set" if offline else f"huggingface.co cannot be reached ({_brief(error)})"
        raise SourceError(offline_message(request, reason, patterns)) from None
    files = {str(p.relative_to(snapshot)): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}
    if not files:
        raise SourceError(_nothing_usable(request))
    return _finish_plan(request, snapshot.name, files, 0, bits, config=snapshot / "config.json")


def _brief(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def _nothing_usable(request: HubRequest) -> str:
    if request.quant is not None:
        return f"{request.repo} has no GGUF file matching {request.quant!r}"
    return (f"{request.repo} has no Hugging Face-layout checkpoint (config.json + safetensors); for a GGUF repo "
            f"name the quantization, e.g. {request.repo}:Q4_K_M")


def _finish_plan(request: HubRequest, commit: str, files: dict[str, int], missing: int, bits: int | None,
                 config: Path | None) -> HubPlan:
    result = HubPlan(request, commit, files, missing, config=config)
    if request.quant is None and "config.json" not in files:
        raise SourceError(_nothing_usable(request))
    if request.quant is None and not _is_mlx(config):
        label = f"{bits}bit" if bits else "full"
        result.converted = cache_dir() / "converted" / f"{request.repo.replace('/', '--')}--{commit[:12]}--{label}"
        result.needs_conversion = not (result.converted / "config.json").is_file()
    return result


def _is_mlx(config: Path | None) -> bool:
    """MLX conversions (ours, mlx-lm's, mlx-vlm's) carry a `quantization` entry or say so in their config."""
    try:
        return "quantization" in json.loads(config.read_text())
    except (AttributeError, OSError, ValueError):
        return False


def fetch(plan_: HubPlan, *, bits: int | None = 4, convert: bool = True,
          on_convert: Callable[[str], None] | None = None) -> Path:
    """Download what `plan_` names (progress bars, resuming partial files) after checking the free disk space,
    and (with `convert`) convert an original checkpoint once; returns the local directory or GGUF file."""
    from huggingface_hub import constants, snapshot_download

    request = plan_.request
    hub_cache = Path(constants.HF_HUB_CACHE)
    need = plan_.missing_bytes
    if plan_.needs_conversion and convert:
        need_converted = int(plan_.total_bytes * CONVERTED_FRACTION.get(bits, 1.0))
        check_free_space(plan_.converted.parent, need_converted, what=f"converting {request.spec}")
    check_free_space(hub_cache, need, what=f"downloading {request.spec}")
    patterns = sorted(plan_.files) if plan_.files else HUB_FILES
    try:
        snapshot = Path(snapshot_download(request.repo, revision=plan_.commit, allow_patterns=patterns))
    except OSError as exc:
        if getattr(exc, "errno", None) == 28:  # ENOSPC
            raise SourceError(f"the disk filled up while downloading {request.spec} into {hub_cache}; free space "
                              "(or set HF_HOME to a larger disk) and run the command again: the download resumes")\
                from None
        raise SourceError(offline_message(request, _brief(exc), patterns)) from None
    except Exception as exc:
        raise SourceError(offline_message(request, _brief(exc), patterns)) from None
    if request.quant is not None:
        return snapshot / next(iter(plan_.files))
    if plan_.converted is None or not convert:
        return snapshot
    if plan_.needs_conversion or not (plan_.converted / "config.json").is_file():
        from mlx_model.convert import convert_checkpoint

        plan_.converted.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(plan_.converted, ignore_errors=True)  # a directory without config.json is not a checkpoint
        convert_checkpoint(snapshot, plan_.converted, bits=bits, on_tensor=on_convert)
    return plan_.converted


def check_free_space(directory: Path, needed: int, *, what: str) -> None:
    """Raise SourceError when `directory`'s disk has less than `needed` bytes free (plus 1% headroom)."""
    if needed <= 0:
        return
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed * 1.01:
        raise SourceError(f"not enough disk space for {what}: {needed / 1e9:.1f} GB needed in {directory}, "
                          f"{free / 1e9:.1f} GB free; free some space or point HF_HOME / GEMMA_AGENT_CACHE at a "
                          "larger disk")
