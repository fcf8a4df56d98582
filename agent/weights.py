"""Which weights the mlx backend runs, and getting them: the default model, the automatic drafter, and asking
before a download (the REPL asks; headless modes need --yes or `download = true`)."""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable

from mlx_model.loader import ModelLoadError
from mlx_model.sources import (CONVERTED_FRACTION, HubPlan, HubRequest, Local, SourceError, cache_dir,
                               check_free_space, fetch, locate, plan)

DEFAULT_MODEL = "google/gemma-4-12B-it"
DEFAULT_BITS = 4
DRAFTER_OFF = "none"
# Each Gemma 4 12B's MTP drafter on the hub.
ASSISTANT_REPO = "google/gemma-4-12B-it-assistant"
GEMMA4_12B = {"hidden_size": 3840, "num_hidden_layers": 48}  # shapes in REFERENCE: hidden 3840, 48 layers
OTHER_WEIGHTS = ("Or use weights you already have: --model DIR (Hugging Face or MLX layout; `gemma-agent convert "
                 "SRC DST --bits 4` makes one), FILE.gguf, ollama:NAME[:TAG] or ORG/NAME on the hub; or a server: "
                 "--backend openai --base-url http://127.0.0.1:8080/v1.")

Ask = Callable[[str], bool]


class WeightsError(Exception):
    """Weights that cannot be had without the user (declined or unconfirmed download, offline, no disk)."""


def resolve(model: str | None, drafter: str | None, *, download: bool, ask: Ask | None,
            notify: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> tuple[str, str | None]:
    """Local paths (directory or GGUF file) of the model and drafter to load, downloading and converting what is
    missing once allowed: `download` (--yes / `download = true`), else `ask` (None in headless modes)."""
    try:
        model_source = locate(model or DEFAULT_MODEL)
        if drafter == DRAFTER_OFF:
            drafter_source = None
        elif drafter:
            drafter_source = locate(drafter)
        else:
            drafter_source = _auto_drafter(model or DEFAULT_MODEL, model_source, notify)
        plans = {"model": plan(model_source, bits=DEFAULT_BITS)} if isinstance(model_source, HubRequest) else {}
        if not drafter and drafter_source is None and "model" in plans and plans["model"].config is not None \
                and is_gemma4_12b(plans["model"].config.parent):  # e.g. an MLX conversion of the 12B
            drafter_source = HubRequest(ASSISTANT_REPO)
        if isinstance(drafter_source, HubRequest):
            try:
                plans["drafter"] = plan(drafter_source, bits=DEFAULT_BITS)
            except SourceError as exc:
                if drafter:
                    raise
                notify(f"no drafter (speculative decoding off): {exc}")
                drafter_source = None
    except SourceError as exc:
        raise WeightsError(f"{exc}. {OTHER_WEIGHTS}") from None
    pending = [p for p in plans.values() if not p.ready]
    if pending and not download:
        summary = describe(pending)
        if ask is None:
            raise WeightsError(f"{summary}. Allow it with `{rerun_with_yes()}` (or `download = true` in "
                               f"~/.config/gemma-agent/config.toml). {OTHER_WEIGHTS}")
        if not ask(f"{summary}. Download now?"):
            raise WeightsError(f"download declined. {OTHER_WEIGHTS}")
    paths = {"model": model_source, "drafter": drafter_source}
    try:
        for role, hub_plan in plans.items():
            paths[role] = Local(_fetch(hub_plan, notify))
        for role, source in paths.items():
            if source is not None and source.is_gguf:
                paths[role] = Local(_converted_gguf(source.path, notify))
    except SourceError as exc:
        raise WeightsError(str(exc)) from None
    drafter_path = paths["drafter"]
    return str(paths["model"].path), None if drafter_path is None else str(drafter_path.path)


def describe(plans: list[HubPlan]) -> str:
    """One line: what will be downloaded (sizes from the hub) and converted, and where."""
    from huggingface_hub import constants

    parts = []
    for p in plans:
        steps = [f"download {p.missing_bytes / 1e9:.1f} GB from huggingface.co into {constants.HF_HUB_CACHE}"
                 if p.missing_bytes else "already downloaded"]
        if p.needs_conversion:
            steps.append(f"convert to {DEFAULT_BITS}-bit once into {p.converted.parent} (about "
                         f"{p.total_bytes * CONVERTED_FRACTION[DEFAULT_BITS] / 1e9:.1f} GB)")
        parts.append(f"{p.request.spec}: {', then '.join(steps)}")
    return "gemma-agent needs weights: " + "; ".join(parts)


def rerun_with_yes() -> str:
    """The command line that was run, with --yes added."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "gemma-agent", *sys.argv[1:]]
    if argv[0] in ("cli.py", "__main__.py", "-m", "-c"):
        argv[0] = "gemma-agent"
    return shlex.join([*argv, "--yes"])


def _fetch(hub_plan: HubPlan, notify: Callable[[str], None]) -> Path:
    if hub_plan.needs_conversion:
        notify(f"converting {hub_plan.request.spec} to {DEFAULT_BITS}-bit into {hub_plan.converted} (once) ...")
    return fetch(hub_plan, bits=DEFAULT_BITS)


def _converted_gguf(path: Path, notify: Callable[[str], None]) -> Path:
    """A GGUF file (read in place) converted once to a 4-bit MLX checkpoint in gemma-agent's cache: loading the
    GGUF itself would hold every tensor dequantized. The cache key is the file's name, size and time."""
    from mlx_model.convert import convert_checkpoint

    stat = path.stat()
    target = cache_dir() / "converted" / f"gguf-{path.name}-{stat.st_size}-{int(stat.st_mtime)}--{DEFAULT_BITS}bit"
    if not (target / "config.json").is_file():
        notify(f"converting {path} to {DEFAULT_BITS}-bit into {target} (once) ...")
        check_free_space(target.parent, int(stat.st_size * 1.2), what=f"converting {path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        try:
            convert_checkpoint(path, target, bits=DEFAULT_BITS)
        except ModelLoadError as exc:
            raise SourceError(f"cannot use {path}: {exc}") from None
    return target


def _auto_drafter(spec: str, source: Local | HubRequest, notify: Callable[[str], None]) -> Local | HubRequest | None:
    """The 12B's assistant when the model is a Gemma 4 12B: fetched along with a hub model; for local weights,
    only when it is already on this machine (a hint otherwise), so a local model never triggers a download."""
    if isinstance(source, HubRequest):
        return HubRequest(ASSISTANT_REPO) if source.repo.lower() == DEFAULT_MODEL.lower() else None
    if not is_gemma4_12b(source.path):
        return None
    request = HubRequest(ASSISTANT_REPO)
    try:
        plan(request, bits=DEFAULT_BITS, local_only=True)
    except SourceError:
        notify(f"tip: speculative decoding with the 12B's drafter: --drafter {ASSISTANT_REPO} (downloads about "
               f"1 GB once); --drafter {DRAFTER_OFF} silences this")
        return None
    return request


def is_gemma4_12b(path: Path) -> bool:
    """Whether local weights have the Gemma 4 12B's shapes (config.json or GGUF metadata)."""
    try:
        if path.is_file():
            from mlx_model.gguf import GGUFFile

            gguf = GGUFFile(path)
            return (gguf.arch_get("embedding_length"), gguf.arch_get("block_count")) == tuple(GEMMA4_12B.values())
        raw = json.loads((path / "config.json").read_text())
    except Exception:  # unreadable weights: the loader reports them
        return False
    text = raw.get("text_config", raw)
    return all(text.get(k) == v for k, v in GEMMA4_12B.items())
