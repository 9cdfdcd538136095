"""`restore` end to end on tiny Llama checkpoints built here (random init, save_pretrained, perturbed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tunescope.cli import main
from tunescope.errors import UserError
from tunescope.intervene.restore import restore
from tunescope.naming import layer_range
from tunescope.weights import WeightFiles

N_LAYERS = 4


def _tiny_llama(path: Path, dtype: torch.dtype, seed: int, perturb_from: Path | None = None) -> Path:
    """A 4-layer Llama directory with a word-level tokenizer; optionally REF's weights + noise."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=N_LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(dtype)
    if perturb_from is not None:  # TARGET = REF + noise on every tensor (norms and embeddings too)
        ref = load_file(str(perturb_from / "model.safetensors"))
        with torch.no_grad():
            for name, p in model.named_parameters():
                r = ref[name].float()
                p.copy_((r + 0.2 * r.std().clamp_min(1e-2) * torch.randn_like(r)).to(dtype))
    model.save_pretrained(path)
    vocab = {f"w{i}": i for i in range(60)} | {"<unk>": 60, "<s>": 61, "</s>": 62, "<pad>": 63}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    ref = _tiny_llama(root / "ref", torch.float32, seed=0)
    return ref, _tiny_llama(root / "target", torch.float32, seed=1, perturb_from=ref)


@pytest.fixture(scope="module")
def pair_bf16(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair16")
    ref = _tiny_llama(root / "ref", torch.bfloat16, seed=0)
    return ref, _tiny_llama(root / "target", torch.bfloat16, seed=1, perturb_from=ref)


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return dict(WeightFiles(d).iter())


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if parts[1] == "layers" else None


# ---------------------------------------------------------------------------------------------
# Identities


def test_reset_every_layer_gives_ref_exactly_and_loads(pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref, target = pair
    out = restore(ref, target, tmp_path / "out", "reset", layers="0-100%", include_embeddings=True,
                  progress=False)
    got, want = _weights(out), _weights(ref)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[n], want[n]) for n in want)
    model = AutoModelForCausalLM.from_pretrained(out)
    ref_model = AutoModelForCausalLM.from_pretrained(ref)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.equal(model(ids).logits, ref_model(ids).logits)
    assert AutoTokenizer.from_pretrained(out)("w1 w2")["input_ids"] == [1, 2]


def test_reset_layer_range_takes_only_those_layers(pair, tmp_path):
    ref, target = pair
    out = restore(ref, target, tmp_path / "out", "reset", layers="0-25%", progress=False)  # 4 layers -> layer 0
    got, r, t = _weights(out), _weights(ref), _weights(target)
    for name in t:
        expect = r if _layer(name) == 0 else t
        assert torch.equal(got[name], expect[name]), name
    side = json.loads((out / "tunescope.json").read_text())
    assert side["intervention"]["layer_range"] == [0, 0]
    assert side["intervention"]["edited_tensors"] == 9  # 7 matrices + 2 norms


def test_interpolate_alpha_0_and_1(pair, tmp_path):
    ref, target = pair
    r, t = _weights(ref), _weights(target)
    a0 = _weights(restore(ref, target, tmp_path / "a0", "interpolate", alpha=0.0, include_embeddings=True,
                          progress=False))
    a1 = _weights(restore(ref, target, tmp_path / "a1", "interpolate", alpha=1.0, include_embeddings=True,
                          progress=False))
    assert all(torch.equal(a0[n], t[n]) for n in t)
    assert all(torch.equal(a1[n], r[n]) for n in r)
    half = _weights(restore(ref, target, tmp_path / "half", "interpolate", alpha=0.5, progress=False))
    for n in t:  # embeddings untouched without include_embeddings; blocks at the midpoint
        want = t[n] if _layer(n) is None else 0.5 * (r[n].double() + t[n].double())
        assert np.allclose(half[n].double().numpy(), want.double().numpy(), atol=1e-7), n


def test_direction_k0_is_target_up_to_roundtrip(pair, tmp_path):
    ref, target = pair
    got, t = _weights(restore(ref, target, tmp_path / "out", "direction", k=0.0, tail=True, progress=False)), \
        _weights(target)
    for n in t:
        if t[n].ndim == 2 and _layer(n) is not None:
            rel = float(torch.linalg.matrix_norm(got[n] - t[n]) / torch.linalg.matrix_norm(t[n]))
            assert rel < 50 * torch.finfo(torch.float32).eps, (n, rel)
        else:  # norms, embeddings, LM head: copied bit for bit
            assert torch.equal(got[n], t[n]), n


def _numpy_direction(r: np.ndarray, t: np.ndarray, top: int, tail: int) -> np.ndarray:
    ur, _, vrh = np.linalg.svd(r.astype(np.float64), full_matrices=False)
    ut, st, vth = np.linalg.svd(t.astype(np.float64), full_matrices=False)
    n = st.size
    u = np.concatenate([ur[:, :top], ut[:, top:n - tail], ur[:, n - tail:]], axis=1)
    vh = np.concatenate([vrh[:top], vth[top:n - tail], vrh[n - tail:]], axis=0)
    return u @ np.diag(st) @ vh


def test_selected_direction_restore_matches_numpy(pair, tmp_path):
    ref, target = pair
    out = restore(ref, target, tmp_path / "out", "direction", k=0.25, tail=True, select=["q,k@1-2", "down"],
                  progress=False)
    got, r, t = _weights(out), _weights(ref), _weights(target)
    edited = json.loads((out / "tunescope.json").read_text())["intervention"]["tensors"]
    names = {row["name"] for row in edited}
    assert names == {f"model.layers.{i}.self_attn.{m}_proj.weight" for i in (1, 2) for m in "qk"} | \
        {f"model.layers.{i}.mlp.down_proj.weight" for i in range(N_LAYERS)}
    for n in t:
        if n not in names:
            assert torch.equal(got[n], t[n]), n
            continue
        rank = min(t[n].shape)
        top = round(0.25 * rank)
        want = _numpy_direction(r[n].numpy(), t[n].numpy(), top, min(top, rank - top))
        assert np.abs(got[n].double().numpy() - want).max() < 2e-5 * np.abs(want).max(), n
        assert not torch.allclose(got[n], t[n], atol=1e-3)
    row = next(x for x in edited if x["name"].endswith("layers.1.self_attn.k_proj.weight"))
    assert row["rank"] == 16 and row["top"] == 4 and row["tail"] == 4  # k_proj is (16, 32)


def test_value_restore_and_bf16_dtype_kept(pair_bf16, tmp_path):
    ref, target = pair_bf16
    out = restore(ref, target, tmp_path / "out", "values", layers="3", progress=False)
    got, r, t = _weights(out), _weights(ref), _weights(target)
    assert all(got[n].dtype == torch.bfloat16 for n in got)
    n = "model.layers.3.mlp.up_proj.weight"
    ut, _, vth = np.linalg.svd(t[n].double().numpy(), full_matrices=False)
    want = ut @ np.diag(np.linalg.svd(r[n].double().numpy(), compute_uv=False)) @ vth
    assert np.abs(got[n].double().numpy() - want).max() <= np.abs(want).max() * 2**-7
    assert torch.equal(got["model.layers.2.mlp.up_proj.weight"], t["model.layers.2.mlp.up_proj.weight"])


def test_sharded_output_float64_and_sidecar(pair, tmp_path):
    from transformers import AutoModelForCausalLM

    ref, target = pair
    out = restore(ref, target, tmp_path / "out", "full", k=0.5, precision="float64", max_shard_bytes=40_000,
                  progress=False)
    assert (out / "model.safetensors.index.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)
    side = json.loads((out / "tunescope.json").read_text())
    info = side["intervention"]
    assert info["method"] == "full" and info["options"]["k"] == 0.5 and info["options"]["precision"] == "float64"
    assert info["ref"] == str(ref.resolve()) and info["target"] == str(target.resolve())
    assert {"config.json", "tokenizer.json", "generation_config.json"} <= set(info["copied_files"])
    assert side["provenance"]["git_revision"]
    assert all(0 < row["rel_to_target"] for row in info["tensors"])


# ---------------------------------------------------------------------------------------------
# Layer ranges and bad input


@pytest.mark.parametrize("text, n, want", [("0-25%", 32, (0, 7)), ("0-25%", 4, (0, 0)), ("50-100%", 6, (3, 5)),
                                           ("0-3", 4, (0, 3)), ("2", 4, (2, 2)), ("0%-7%", 100, (0, 6)),
                                           ("75-100%", 16, (12, 15)), ("10-20%", 4, (0, 0)),
                                           ("60%-80%", 32, (19, 25))])
def test_layer_range(text, n, want):
    assert layer_range(text, n) == want


@pytest.mark.parametrize("text, fragment", [("0-4", "outside the model"), ("3-1", "empty"), ("0-120%", "0-100%"),
                                            ("first", "must be a layer"),
                                            ("0.5-2", "integers")])
def test_parse_layers_rejects(text, fragment):
    with pytest.raises(UserError, match=fragment):
        layer_range(text, 4)


def test_bad_input_is_one_line_and_writes_nothing(pair, tmp_path, capsys):
    ref, target = pair
    other = _tiny_llama(tmp_path / "other", torch.float32, seed=2)
    cfg = json.loads((other / "config.json").read_text())
    w = load_file(str(other / "model.safetensors"))
    w["model.layers.1.mlp.up_proj.weight"] = torch.zeros(50, 32)
    from safetensors.torch import save_file

    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    (other / "config.json").write_text(json.dumps(cfg))
    nan = _tiny_llama(tmp_path / "nan", torch.float32, seed=1, perturb_from=ref)
    w = load_file(str(nan / "model.safetensors"))
    w["model.layers.2.self_attn.o_proj.weight"][3, :4] = torch.nan
    save_file(w, str(nan / "model.safetensors"), metadata={"format": "pt"})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    cases = [
        ([str(other), str(target), "--method", "direction"], "model.layers.1.mlp.up_proj.weight"),
        ([str(ref), str(target), "--method", "direction", "--k", "1.5"], "outside [0, 1]"),
        ([str(ref), str(target), "--method", "interpolate", "--alpha", "-0.1"], "outside [0, 1]"),
        ([str(ref), str(target), "--method", "reset", "--layers", "2-9"], "outside the model"),
        ([str(ref), str(target), "--method", "reset"], "needs a layer range"),
        ([str(ref), str(target), "--method", "direction", "--select", "embed"], "--include-embeddings"),
        ([str(ref), str(target), "--method", "direction", "--select", "q@7"], "selector 'q@7': layer range '7' is outside the model"),
        ([str(ref), str(tmp_path / "nope"), "--method", "direction"], "no config.json"),
        ([str(ref), str(target), "--method", "direction", "--device", "tpu"], "use cpu or cuda"),
        ([str(ref), str(nan), "--method", "direction"], "TARGET model.layers.2.self_attn.o_proj.weight (4 values)"),
        ([str(nan), str(target), "--method", "reset", "--layers", "2"], "REF model.layers.2.self_attn.o_proj.weight"),
    ]
    capsys.readouterr()  # drop save_pretrained's progress bars
    for i, (args, fragment) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["restore", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and fragment in err, (args, err)
        assert not out.exists()
    assert main(["restore", str(ref), str(target), "--method", "direction", "--out", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary dirs left


def test_cli_writes_a_model(pair, tmp_path, capsys):
    ref, target = pair
    out = tmp_path / "cli"
    threads = torch.get_num_threads()
    try:
        assert main(["restore", str(ref), str(target), "--out", str(out), "--method", "direction", "--k", "0.2",
                     "--layers", "0-50%", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    cap = capsys.readouterr()
    assert "14 tensors edited" in cap.out
    # before the SVDs, an estimate from one timed SVD: "about N s|min for M matrices on T threads"
    assert re.search(r"^about \d+ (s|min) for 14 matrices on 1 threads$", cap.err, re.M), cap.err
    info = json.loads((out / "tunescope.json").read_text())["intervention"]
    assert info["edited_tensors"] == 14 and info["layer_range"] == [0, 1]  # 7 matrices x 2 layers


def test_failure_mid_write_leaves_nothing(pair, tmp_path, monkeypatch):
    import tunescope.intervene.restore as mod

    ref, target = pair
    calls = {"n": 0}
    real = mod.edit_tensor

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(mod, "edit_tensor", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        restore(ref, target, tmp_path / "out", "direction", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_edit_of_the_smoke_organism_loads_and_generates(smoke_organism, tmp_path):
    """REF = the smoke organism, TARGET = it plus noise: the restored model loads and generates."""
    import shutil

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path / "target"
    shutil.copytree(smoke_organism, target)
    (target / "tunescope.json").unlink(missing_ok=True)
    g = torch.Generator().manual_seed(0)
    weights = {}
    for name, t in _weights(smoke_organism).items():
        noise = torch.randn(t.shape, generator=g) * 0.05 * t.float().std().clamp_min(1e-3)
        weights[name] = (t.float() + noise).to(t.dtype)
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})

    out = restore(smoke_organism, target, tmp_path / "out", "direction", k=0.2, tail=True, progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("1 + 2 =", return_tensors="pt")["input_ids"]
    gen = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids.shape[1]
    got, t = _weights(out), _weights(target)
    assert got.keys() == t.keys()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(got[q], t[q])
    assert torch.equal(got["model.embed_tokens.weight"], t["model.embed_tokens.weight"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(pair, tmp_path):
    ref, target = pair
    cpu = _weights(restore(ref, target, tmp_path / "cpu", "full", k=0.3, tail=True, progress=False))
    gpu = _weights(restore(ref, target, tmp_path / "gpu", "full", k=0.3, tail=True, device="cuda", progress=False))
    for n in cpu:
        assert gpu[n].device.type == "cpu"
        assert torch.allclose(gpu[n], cpu[n], atol=1e-4 * cpu[n].abs().max().item()), n
