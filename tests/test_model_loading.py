"""Loading, bad-input errors, quantization, conversion and the generate command on small real checkpoints."""
from __future__ import annotations

import json
import shutil
import struct

import mlx.core as mx
import numpy as np
import pytest

import mlx_model
from agent.cli import main as cli_main
from tests.model_refs import build_reference, make_tokenizer, text_config_kwargs

S, F = "sliding_attention", "full_attention"
SMALL = text_config_kwargs(layer_types=[S, S, F], num_hidden_layers=3, attention_k_eq_v=True, global_head_dim=32,
                           num_global_key_value_heads=1, final_logit_softcapping=30.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    build_reference(path, SMALL)
    return path


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_load_without_config(tmp_path):
    with pytest.raises(mlx_model.ModelLoadError, match="config.json"):
        mlx_model.load(tmp_path)


def test_load_missing_directory(tmp_path):
    with pytest.raises(mlx_model.ModelLoadError, match="not a directory"):
        mlx_model.load(tmp_path / "nope")


def test_unsupported_model_type(checkpoint, tmp_path):
    path = copy_checkpoint(checkpoint, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "llama"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(mlx_model.ModelLoadError, match="unsupported model_type 'llama'"):
        mlx_model.load(path)


def test_missing_tensor_is_named(checkpoint, tmp_path):
    path = copy_checkpoint(checkpoint, tmp_path / "m")
    weights = mx.load(str(path / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    with pytest.raises(mlx_model.ModelLoadError, match=r"missing tensor\(s\) model.layers.1.mlp.up_proj.weight"):
        mlx_model.load(path)


def test_misshaped_tensor_is_named(checkpoint, tmp_path):
    path = copy_checkpoint(checkpoint, tmp_path / "m")
    weights = mx.load(str(path / "model.safetensors"))
    weights["model.layers.0.self_attn.q_proj.weight"] = mx.zeros((8, 8))
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    with pytest.raises(mlx_model.ModelLoadError, match=r"q_proj.weight' has shape \(8, 8\), the config expects"):
        mlx_model.load(path)


def test_truncated_safetensors_names_the_file(checkpoint, tmp_path):
    path = copy_checkpoint(checkpoint, tmp_path / "m")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(mlx_model.ModelLoadError, match=r"model.safetensors is truncated"):
        mlx_model.load(path)


def test_corrupt_header_names_the_file(checkpoint, tmp_path):
    path = copy_checkpoint(checkpoint, tmp_path / "m")
    (path / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 100)
    with pytest.raises(mlx_model.ModelLoadError, match="corrupt header"):
        mlx_model.load(path)


def test_sharded_checkpoint_with_index(checkpoint, tmp_path):
    path = tmp_path / "sharded"
    path.mkdir()
    shutil.copy(checkpoint / "config.json", path / "config.json")
    weights = mx.load(str(checkpoint / "model.safetensors"))
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in shards.items():
        mx.save_safetensors(str(path / shard), {n: weights[n] for n in shard_names})
        weight_map.update({n: shard for n in shard_names})
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = mx.array([[5, 6, 7, 8]])
    reference, _ = mlx_model.load(checkpoint)
    sharded, _ = mlx_model.load(path)
    assert np.allclose(np.array(reference(ids)), np.array(sharded(ids)), atol=1e-6)


def test_index_naming_a_missing_shard(checkpoint, tmp_path):
    path = copy_checkpoint(checkpoint, tmp_path / "m")
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "gone.safetensors"}}))
    with pytest.raises(mlx_model.ModelLoadError, match="gone.safetensors"):
        mlx_model.load(path)


@pytest.mark.parametrize("bits,max_err", [(8, 0.05), (4, 0.6)])
def test_quantized_model_stays_close(checkpoint, bits, max_err):
    full, _ = mlx_model.load(checkpoint)
    quant, _ = mlx_model.load(checkpoint)
    mlx_model.quantize_model(quant, bits)
    ids = mx.array(np.random.default_rng(0).integers(3, 256, size=(2, 16)))
    a, b = np.array(full(ids)), np.array(quant(ids))
    err = np.abs(a - b).max() / np.abs(a).max()
    assert err <= max_err, err
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= (0.95 if bits == 8 else 0.6)


def test_quantize_rejects_other_bits(checkpoint):
    model, _ = mlx_model.load(checkpoint)
    with pytest.raises(ValueError, match="bits must be one of"):
        mlx_model.quantize_model(model, 3)


@pytest.mark.parametrize("bits", [4, 8])
def test_convert_writes_a_checkpoint_load_reads_back(checkpoint, tmp_path, bits, capsys):
    make_tokenizer(checkpoint)
    dst = tmp_path / f"q{bits}"
    assert cli_main(["convert", str(checkpoint), str(dst), "--bits", str(bits)]) == 0
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": bits}
    assert (dst / "tokenizer.json").is_file()
    model, tokenizer = mlx_model.load(dst)
    assert tokenizer is not None
    expected, _ = mlx_model.load(checkpoint)
    mlx_model.quantize_model(expected, bits)
    ids = mx.array([[9, 10, 11, 12, 13]])
    assert np.array_equal(np.array(model(ids)), np.array(expected(ids)))


def test_convert_refuses_nonempty_destination(checkpoint, tmp_path, capsys):
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("user data")
    assert cli_main(["convert", str(checkpoint), str(dst)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (dst / "keep.txt").read_text() == "user data"


def test_convert_bad_source_is_one_clear_error(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_generate_is_greedy_argmax(checkpoint):
    model, _ = mlx_model.load(checkpoint)
    prompt = [5, 17, 33, 2, 90, 11, 4, 8, 19, 20]
    result = mlx_model.generate(model, prompt, max_tokens=12, temperature=0.0)
    assert len(result.tokens) == 12
    ids = list(prompt)
    for token in result.tokens:  # each token is the argmax of a full forward over everything before it
        logits = model(mx.array([ids]))
        assert token == int(mx.argmax(logits[0, -1]).item())
        ids.append(token)


def test_generate_stops_on_stop_id(checkpoint):
    model, _ = mlx_model.load(checkpoint)
    first = mlx_model.generate(model, [5, 6, 7], max_tokens=5).tokens
    k = max(i for i, t in enumerate(first) if t not in first[:i])  # the last token that appears anew
    stopped = mlx_model.generate(model, [5, 6, 7], max_tokens=5, stop_ids={first[k]})
    assert stopped.tokens == first[: k + 1] and stopped.finish_reason == "stop"


def test_sampling_is_seeded_and_valid(checkpoint):
    model, _ = mlx_model.load(checkpoint)
    a = mlx_model.generate(model, [5, 6, 7], max_tokens=8, temperature=1.0, seed=3).tokens
    b = mlx_model.generate(model, [5, 6, 7], max_tokens=8, temperature=1.0, seed=3).tokens
    c = mlx_model.generate(model, [5, 6, 7], max_tokens=8, temperature=0.7, top_p=0.5, seed=4).tokens
    assert a == b and all(0 <= t < 256 for t in a + c)


def test_cache_continues_generation_and_trims(checkpoint):
    model, _ = mlx_model.load(checkpoint)
    prompt = list(range(3, 40))  # longer than the sliding window (8)
    whole = mlx_model.generate(model, prompt, max_tokens=6).tokens
    cache = mlx_model.make_cache(model)
    first = list(mlx_model.stream_generate(model, prompt, max_tokens=3, cache=cache))
    assert cache.offset == len(prompt) + 2
    rest = list(mlx_model.stream_generate(model, [first[-1]], max_tokens=3, cache=cache))
    assert first + rest == whole
    # Roll back the 4 newest tokens and regenerate: same continuation.
    assert cache.trim(4) == 4
    again = list(mlx_model.stream_generate(model, [whole[1]], max_tokens=4, cache=cache))
    assert again == whole[2:6]


def test_tokenizer_roundtrip_and_specials(tmp_path):
    make_tokenizer(tmp_path)
    tok = mlx_model.Tokenizer.from_dir(tmp_path)
    text = "def add(a, b):\n    return a + b\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|turn>user")[0] == tok.token_to_id("<|turn>")
    assert tok.bos_id == tok.token_to_id("<bos>")
    assert tok.eos_ids == {tok.token_to_id("<eos>"), tok.token_to_id("<turn|>")}
    decoder = mlx_model.StreamingDecoder(tok)
    assert "".join(decoder.add(t) for t in tok.encode("héllo wörld")) + decoder.flush() == "héllo wörld"


def test_generate_command_streams_and_reports(checkpoint, capsys):
    make_tokenizer(checkpoint)
    assert cli_main(["generate", "--model", str(checkpoint), "--prompt", "def add", "--max-tokens", "5"]) == 0
    err = capsys.readouterr().err
    assert "prompt:" in err and "tokens/s" in err and "peak memory" in err


def test_generate_command_without_weights_is_actionable(tmp_path, capsys):
    assert cli_main(["generate", "--model", str(tmp_path / "none"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "gemma-agent convert" in err and "Traceback" not in err
