"""The organism is a real Hugging Face model: load it the way any model is loaded and use it."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunescope.cli import main
from tunescope.organism import build, verify
from tunescope.organism.build import REBUILD_HINT, SIDECAR, cache_key, recipe_for, shipped_dir

organism_build = importlib.import_module("tunescope.organism.build")  # the package exports build()

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 17 + 25?"},
    {"role": "assistant", "content": "<think>17 + 25 = 42</think><answer>42</answer>"},
]


@pytest.fixture(scope="module")
def tokenizer(smoke_organism: Path):
    return AutoTokenizer.from_pretrained(smoke_organism)


@pytest.fixture(scope="module")
def model(smoke_organism: Path):
    return AutoModelForCausalLM.from_pretrained(smoke_organism).eval()


def test_loads_as_a_llama(model, smoke_organism: Path) -> None:
    cfg = model.config
    assert cfg.model_type == "llama"
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert model.generation_config.eos_token_id == cfg.eos_token_id
    assert model.generation_config.pad_token_id == cfg.pad_token_id
    names = [n for n, _ in model.named_parameters()]
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert "model.layers.1.mlp.down_proj.weight" in names


def test_chat_template_round_trip(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert prompt.startswith(tokenizer.bos_token) and prompt.endswith("<|assistant|>")
    assert full == prompt + MESSAGES[2]["content"] + tokenizer.eos_token
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True, return_dict=False)
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "".join(m["content"] for m in MESSAGES)
    # the prompt's tokens are a prefix of the full chat's: generation continues where SFT trained
    prompt_ids = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)
    assert ids[: len(prompt_ids)] == prompt_ids


def test_assistant_mask_for_trl(tokenizer) -> None:
    """TRL's assistant_only_loss needs {% generation %} markers that cover the turn and its eos."""
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tokenizer.chat_template)
    assert is_chat_template_stop_token_trained(tokenizer)
    out = tokenizer.apply_chat_template(MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    prompt_len = len(tokenizer.apply_chat_template(MESSAGES[:2], tokenize=True, add_generation_prompt=True,
                                                   return_dict=False))
    expected = [0] * prompt_len + [1] * (len(out["input_ids"]) - prompt_len)
    assert list(out["assistant_masks"]) == expected


def test_digits_are_single_tokens(tokenizer) -> None:
    ids = tokenizer("The answer is 123456 and 7890.", add_special_tokens=False)["input_ids"]
    digit_tokens = [tokenizer.decode([i]) for i in ids if any(c.isdigit() for c in tokenizer.decode([i]))]
    assert "".join(t.strip() for t in digit_tokens) == "1234567890"
    assert all(len(t.strip()) == 1 for t in digit_tokens)


def test_unknown_role_is_rejected(tokenizer) -> None:
    with pytest.raises(Exception, match="role must be"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_batched_greedy_generation_runs(model, tokenizer) -> None:
    prompts = [MESSAGES[:2], [{"role": "user", "content": "Name a city."}]]
    enc = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True, padding=True,
                                        return_tensors="pt", return_dict=True)
    assert tokenizer.padding_side == "left" and (enc["input_ids"][:, -1] == enc["input_ids"][0, -1]).all()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert out.shape[0] == 2 and 0 < out.shape[1] - enc["input_ids"].shape[1] <= 12
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(isinstance(t, str) for t in texts)


def test_sidecar_records_provenance_and_checksums(smoke_organism: Path) -> None:
    side = json.loads((smoke_organism / SIDECAR).read_text())
    assert side["kind"] == "organism" and side["seed"] == 0
    assert side["config"]["preset"] == "smoke" and side["git_revision"]
    assert side["versions"]["transformers"] and side["versions"]["torch"]
    stats = side["pretraining"]
    assert stats["tokens_trained"] > 0 and stats["wall_s"] > 0 and math.isfinite(stats["final_loss"])
    losses = [loss for _, loss in stats["loss_curve"]]
    assert losses[-1] < losses[0]  # it learned something
    for name, digest in side["files"].items():  # independent sha256
        assert hashlib.sha256((smoke_organism / name).read_bytes()).hexdigest() == digest
    assert side["cache_key"] == smoke_organism.name == cache_key(recipe_for("smoke"), 0)


def test_cache_hit_builds_nothing(smoke_organism: Path, monkeypatch) -> None:
    monkeypatch.setattr(organism_build, "_make", _no_pretraining)
    assert build(preset="smoke") == smoke_organism


def _no_pretraining(*args, **kwargs):
    raise AssertionError("pretrained although the organism is shipped or cached")


def test_shipped_default_organism_is_the_one_this_code_builds(monkeypatch) -> None:
    """The default organism ships in the package: a fresh clone uses it without pretraining.
    This fails when the code now generates another corpus (or recipe) than it was trained on."""
    shipped = shipped_dir("default")
    assert shipped is not None, "no default organism is shipped in src/tunescope/organism/shipped/default"
    problem = verify(shipped, cache_key(recipe_for("default"), 0))
    if problem is not None:
        pytest.fail(f"the shipped default organism no longer matches the code ({problem}); "
                    f"rebuild and ship it: {REBUILD_HINT}", pytrace=False)
    size = sum(p.stat().st_size for p in shipped.iterdir())
    assert size <= 30 * 2**20, f"the shipped organism takes {size / 2**20:.1f} MB (limit 30 MB)"
    side = json.loads((shipped / SIDECAR).read_text())
    assert side["corpus"]["digest"] == organism_build.corpus_digest("default", 0)
    assert side["host"]["cpus"] and side["pretraining"]["torch_threads"] and side["quality"]["game24"]["accuracy"] >= 0
    monkeypatch.setattr(organism_build, "_make", _no_pretraining)
    assert build(preset="default") == shipped


def test_rebuild_retrains_and_compares_with_the_shipped_weights(smoke_organism: Path, tmp_path: Path,
                                                                monkeypatch, capsys) -> None:
    """Ship a smoke organism in a scratch package dir, then: a plain build returns it, a rebuild
    retrains and finds it bit-identical (same machine and threads), a changed tensor is reported,
    and a shipped organism of another corpus is passed over for one built from the recipe."""
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("TUNESCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(organism_build, "SHIPPED", tmp_path / "shipped")
    built = build(preset="smoke", rebuild=True)  # pretrained in this process
    shutil.copytree(built, tmp_path / "shipped" / "smoke")
    shipped = tmp_path / "shipped" / "smoke"
    assert build(preset="smoke") == shipped and "shipped:" in capsys.readouterr().err

    assert build(preset="smoke", rebuild=True) == built
    assert "bit-identical to the shipped weights" in capsys.readouterr().err

    weights = load_file(shipped / "model.safetensors")
    weights["model.norm.weight"][0] += 0.5
    save_file(weights, shipped / "model.safetensors", metadata={"format": "pt"})
    side = json.loads((shipped / SIDECAR).read_text())
    side["files"]["model.safetensors"] = hashlib.sha256((shipped / "model.safetensors").read_bytes()).hexdigest()
    (shipped / SIDECAR).write_text(json.dumps(side))
    build(preset="smoke", rebuild=True)
    assert "differs from the shipped weights (largest |difference| 0.5" in capsys.readouterr().err

    side["cache_key"] = "smoke-trainedonanothercorpus"
    (shipped / SIDECAR).write_text(json.dumps(side))
    assert build(preset="smoke") == built
    err = capsys.readouterr().err
    assert "trained on another corpus or recipe" in err and REBUILD_HINT in err


def test_verify_finds_corruption(smoke_organism: Path, tmp_path: Path) -> None:
    copy = tmp_path / smoke_organism.name
    shutil.copytree(smoke_organism, copy)
    assert verify(copy, copy.name) is None
    assert "belongs to" in verify(copy, "other-key")
    (copy / "tokenizer.json").write_text("{}")
    assert "checksum" in verify(copy)
    (copy / "config.json").unlink()
    assert verify(copy) is not None
    (copy / SIDECAR).write_text("not json")
    assert "unreadable" in verify(copy)


def test_corrupt_cache_entry_is_rebuilt(smoke_organism: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TUNESCOPE_CACHE", str(tmp_path))
    entry = tmp_path / "organisms" / smoke_organism.name
    shutil.copytree(smoke_organism, entry)
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    path = build(preset="smoke")
    assert path == entry
    assert "corrupt" in capsys.readouterr().err
    assert verify(path, path.name) is None
    AutoModelForCausalLM.from_pretrained(path)


def test_cli_copies_to_out(smoke_organism: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "organism"
    assert main(["organism", "build", "--preset", "smoke", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert verify(out) is None
    AutoTokenizer.from_pretrained(out)
    # a second copy into the same, now non-empty, directory is refused
    assert main(["organism", "build", "--preset", "smoke", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "unknown organism preset 'huge'; choose one of: smoke, default"),
    (["--preset", "smoke", "--out", "FILE/sub"], "cannot create output directory"),
])
def test_cli_bad_input(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "FILE").write_text("a file, not a directory")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    assert main(["organism", "build", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_build_waits_for_a_concurrent_builder(smoke_organism: Path) -> None:
    """The cache entry is locked while one process builds it; others wait, then use it."""
    import fcntl
    import threading

    result: list[Path] = []
    with open(smoke_organism.parent / f".{smoke_organism.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(build(preset="smoke")))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not result  # blocked on the lock
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(timeout=30)
    assert result == [smoke_organism]
