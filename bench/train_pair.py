"""Train a small Gemma-4-shaped target on the Python standard library and distill an MTP drafter from it.

Training runs on the CPU with PyTorch and the transformers reference classes (the `test` extra): MLX's CPU
matmuls are far too slow to train on here. The saved checkpoints are plain Hugging Face directories that
`mlx_model.load` / `mlx_model.load_drafter` read (their parity with transformers is tested). It uses only what every machine has: the stdlib sources of the running
Python (files whose path hashes into the held-out tenth are kept out of training; bench/speculative.py takes its
prompts from them). Steps:
1. a byte-level BPE tokenizer (vocabulary 2048, Gemma's special tokens at their low ids) trained with
   `tokenizers`;
2. the target: 4 layers (3 sliding + 1 full, k_eq_v, window 64), hidden 256, trained next-token;
3. the drafter: 1 layer reading the target's last full-attention K/V, hidden 128, distilled from the frozen
   target exactly as it is used (input [target embedding of token p ; target hidden at p - 1] at position p,
   attending to the target's K/V before p), over two chained draft steps, to the target's distributions.
The pair is written (bf16) to `--out` (default tests/fixtures/draft_pair: target/ and drafter/), small enough
to ship as a test fixture. About 10-15 minutes on 2 CPU cores.

Reproduce: .venv/bin/python bench/train_pair.py [--target-minutes 8 --drafter-minutes 5]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

S, F = "sliding_attention", "full_attention"
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>"]
VOCAB = 2048
WINDOW = 64
TARGET = dict(model_type="gemma4_unified_text", vocab_size=VOCAB, hidden_size=256, intermediate_size=1024,
              num_hidden_layers=4, layer_types=[S, S, S, F], num_attention_heads=4, num_key_value_heads=2,
              head_dim=64, global_head_dim=128, num_global_key_value_heads=1, attention_k_eq_v=True,
              sliding_window=WINDOW, final_logit_softcapping=30.0, max_position_embeddings=4096,
              bos_token_id=2, eos_token_id=1, pad_token_id=0)
DRAFTER_TEXT = dict(TARGET, hidden_size=128, intermediate_size=384, num_hidden_layers=1, layer_types=[F],
                    num_attention_heads=2)


def is_held_out(path: Path) -> bool:
    return hashlib.sha1(str(path.name).encode()).digest()[0] % 10 == 0


def stdlib_files() -> list[Path]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(lib.rglob("*.py"))
             if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
             and p.stat().st_size < 200_000]
    return files


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def train_tokenizer(texts: list[str], out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>"}))
    return tok


def reference_configs():
    """transformers configs of the pair (the drafter's all-KV-shared config needs the patch below)."""
    from transformers import Gemma4UnifiedAssistantConfig, Gemma4UnifiedTextConfig

    target = Gemma4UnifiedTextConfig(**{k: v for k, v in TARGET.items() if k != "model_type"})
    drafter_text = Gemma4UnifiedTextConfig(**{k: v for k, v in DRAFTER_TEXT.items() if k != "model_type"})
    assistant = Gemma4UnifiedAssistantConfig(text_config=drafter_text.to_dict(),
                                             backbone_hidden_size=TARGET["hidden_size"])
    return target, assistant


def patch_kv_sharing():
    """transformers 5.23 cannot build an assistant whose every layer is KV-shared (kv_sharing_modes raises);
    mark such layers "reuse" — the shared K/V are passed to forward() explicitly."""
    from transformers import Gemma4UnifiedTextConfig

    original = Gemma4UnifiedTextConfig.kv_sharing_modes

    def all_reuse(self):
        if self.num_kv_shared_layers == self.num_hidden_layers:
            return ["reuse"] * self.num_hidden_layers
        return original.fget(self)

    Gemma4UnifiedTextConfig.kv_sharing_modes = property(all_reuse)


def batches(data: np.ndarray, batch: int, length: int, rng: np.random.Generator):
    import torch

    while True:
        starts = rng.integers(0, len(data) - length - 1, size=batch)
        yield torch.tensor(np.stack([data[s:s + length] for s in starts]), dtype=torch.long)


def warmup_then_cosine(warmup_steps: int, minutes: float):
    """LR factor: linear warm-up, then a cosine decay to 0.1 over the wall-clock budget (training stops on time)."""
    start = time.time()

    def factor(step: int) -> float:
        done = min(1.0, (time.time() - start) / (minutes * 60))
        return min(1.0, (step + 1) / warmup_steps) * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))
    return factor


def optimize(params, losses, minutes: float, lr: float, warmup_steps: int, name: str, log) -> None:
    """AdamW (weight decay 0.01, gradients clipped to norm 1, warm-up then cosine LR) on each loss that `losses`
    yields, until `minutes` have passed."""
    import torch

    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_cosine(warmup_steps, minutes))
    deadline = time.time() + minutes * 60
    for step, loss in enumerate(losses):
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(f"{name} step {step}: loss {loss.item():.3f}")
        if time.time() > deadline:
            log(f"{name}: {step + 1} steps, last loss {loss.item():.3f}")
            break


def train_target(model, data: np.ndarray, minutes: float, batch: int, length: int, log) -> None:
    def losses():
        for ids in batches(data, batch, length + 1, np.random.default_rng(0)):
            yield model(input_ids=ids[:, :-1], labels=ids[:, :-1], use_cache=False).loss

    model.train()
    optimize(model.parameters(), losses(), minutes, lr=2e-3, warmup_steps=50, name="target", log=log)
    model.eval()


def shifted_mask(n: int, window: int | None):
    """Additive mask [1, 1, n, n]: the drafter at position p sees the target keys before p (the last
    `window` of them on sliding layers) — what `TargetCacheView` gives it at inference time. Row 0 has no
    past; it sees key 0 only to stay finite and is left out of the loss."""
    import torch

    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (k < q) | ((q == 0) & (k == 0))
    if window is not None:
        allowed &= k >= q - window
    return torch.where(allowed, 0.0, float("-inf"))[None, None]


def distill_drafter(drafter, target, data: np.ndarray, minutes: float, batch: int, length: int, log,
                    steps_ahead: int = 2) -> None:
    """Train the drafter to reproduce the target's next-token distribution over `steps_ahead` chained drafts.

    Draft step j at position p: input [target embedding of x_{p+j} ; state], state = target hidden at p - 1
    for j = 0 and the drafter's own projected state afterwards; the teacher is the target's distribution at
    position p + j.
    """
    import torch

    # The drafter's layers are all full attention: it reads the K/V of the target's last full layer (the
    # target's cache keeps its full-attention K/V whole; sliding layers' would be cut to the window).
    assert set(DRAFTER_TEXT["layer_types"]) == {F}
    sources = {F: max(i for i, t in enumerate(TARGET["layer_types"]) if t == F)}

    def losses():
        for ids in batches(data, batch, length, np.random.default_rng(1)):
            with torch.no_grad():
                out = target(input_ids=ids, use_cache=True, output_hidden_states=True)
                hidden = out.hidden_states[-1]
                teacher = torch.log_softmax(out.logits.float(), dim=-1)
                layers = out.past_key_values.layers
                kv = {t: (layers[i].keys, layers[i].values) for t, i in sources.items()}
                embeds = target.model.embed_tokens(ids)
            state = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)  # hidden at p - 1
            total = 0.0
            n = ids.shape[1]
            for j in range(steps_ahead):
                span = n - j
                x = drafter.pre_projection(torch.cat([embeds[:, j:], state[:, :span]], dim=-1))
                masks = {F: shifted_mask(span, None)}
                shared = {t: (k[:, :, :span], v[:, :, :span]) for t, (k, v) in kv.items()}
                h = drafter.model(inputs_embeds=x, attention_mask=masks, position_ids=torch.arange(span)[None],
                                  shared_kv_states=shared, use_cache=False).last_hidden_state
                logp = torch.log_softmax(drafter.lm_head(h).float(), dim=-1)
                ce = -(teacher[:, j:].exp() * logp).sum(-1)[:, 1:]
                total = total + ce.mean()
                state = drafter.post_projection(h)[:, :-1]
            yield total / steps_ahead

    drafter.train()
    optimize(drafter.parameters(), losses(), minutes, lr=3e-3, warmup_steps=30, name="drafter", log=log)
    drafter.eval()


def save(model, out: Path) -> None:
    """Save in bf16 with transformers; our loader reads these directories (parity-tested)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    model.to(torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "draft_pair")
    parser.add_argument("--target-minutes", type=float, default=8.0)
    parser.add_argument("--drafter-minutes", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--corpus-mb", type=float, default=6.0, help="megabytes of stdlib source to train on")
    parser.add_argument("--drafter-only", action="store_true",
                        help="keep the tokenizer and target already in --out; distill a new drafter only")
    parser.add_argument("--steps-ahead", type=int, default=2,
                        help="chained draft steps the drafter is trained over (default 2)")
    parser.add_argument("--drafter-hidden", type=int, default=DRAFTER_TEXT["hidden_size"],
                        help=f"drafter width (default {DRAFTER_TEXT['hidden_size']}; MLP 3x this)")
    args = parser.parse_args()
    DRAFTER_TEXT.update(hidden_size=args.drafter_hidden, intermediate_size=3 * args.drafter_hidden)
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    files = [f for f in stdlib_files() if not is_held_out(f)]
    texts, size = [], 0
    for f in files:
        text = read(f)
        texts.append(text)
        size += len(text)
        if size > args.corpus_mb * 1e6:
            break
    log(f"corpus: {len(texts)} training files, {size / 1e6:.1f} MB")
    if args.drafter_only:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.out / "target" / "tokenizer.json"))
    else:
        tok = train_tokenizer(texts, args.out / "target")
    eos = tok.token_to_id("<eos>")
    data = np.concatenate([np.array(tok.encode(t).ids + [eos], dtype=np.int32) for t in texts])
    log(f"tokenizer: vocabulary {tok.get_vocab_size()}, {len(data) / 1e6:.2f}M training tokens")

    import torch
    from transformers import Gemma4UnifiedAssistantForCausalLM, Gemma4UnifiedForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    patch_kv_sharing()
    target_config, assistant_config = reference_configs()
    if args.drafter_only:
        target = Gemma4UnifiedForCausalLM.from_pretrained(args.out / "target", dtype=torch.float32)
        target.config._attn_implementation = "sdpa"
        target.eval()
    else:
        target = Gemma4UnifiedForCausalLM(target_config)
        target.config._attn_implementation = "sdpa"
        train_target(target, data, args.target_minutes, args.batch, args.length, log)
        save(target, args.out / "target")
    for p in target.parameters():
        p.requires_grad_(False)

    drafter = Gemma4UnifiedAssistantForCausalLM(assistant_config)
    drafter.config._attn_implementation = "eager"
    drafter.config.text_config._attn_implementation = "eager"
    with torch.no_grad():  # warm start of the tied head: the target's embeddings projected to the drafter width
        proj = torch.randn(TARGET["hidden_size"], DRAFTER_TEXT["hidden_size"]) / TARGET["hidden_size"] ** 0.5
        drafter.model.embed_tokens.weight.copy_(target.model.embed_tokens.weight @ proj)
    distill_drafter(drafter, target, data, args.drafter_minutes, args.batch, args.length, log,
                    steps_ahead=args.steps_ahead)
    save(drafter, args.out / "drafter")
    sizes = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    log(f"wrote {args.out} ({sizes / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
