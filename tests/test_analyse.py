"""`tunescope diff`: every number against an independent float64 numpy computation, on tiny
checkpoints of each architecture family built locally from transformers configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from tunescope.analyse.diff import diff, row_blocks
from tunescope.analyse.mapped import MappedWeights
from tunescope.checkpoints import ModelRef, resolve_models
from tunescope.cli import main
from tunescope.weights import WeightFiles

SEVEN = {"q", "k", "v", "o", "gate", "up", "down"}
KW = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=64, max_position_embeddings=32)


def tiny_config(arch: str):
    import transformers as tf

    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)
    cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config,
           "qwen3": tf.Qwen3Config, "olmo2": tf.Olmo2Config, "phi3": tf.Phi3Config}[arch]
    extra = {"head_dim": 8} if arch == "qwen3" else {}
    extra |= {"pad_token_id": 0} if arch == "phi3" else {}
    return cls(**KW, **extra)


def build(root: Path, arch: str, scales: list[float], dtype=torch.float32, shard: str | None = None,
          seed: int = 0) -> tuple[Path, list[ModelRef]]:
    """Save a random tiny model and perturbed copies (W + scale * std(W) * noise) with sidecars."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch)).to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(root / "base", **kw)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    refs = []
    for i, s in enumerate(scales):
        with torch.no_grad():
            for k, p in model.state_dict().items():
                w = base[k].float()
                sd = w.std() if w.numel() > 1 and w.std() > 0 else torch.tensor(0.02)
                p.copy_(w + s * sd * torch.randn_like(w))
        d = root / f"step-{i + 1}"
        model.save_pretrained(d, **kw)
        (d / "tunescope.json").write_text(json.dumps({"step": 10 * (i + 1), "fraction": (i + 1) / len(scales)}))
        refs.append(ModelRef(path=d, name=d.name, step=10 * (i + 1), fraction=(i + 1) / len(scales)))
    return root / "base", refs


def load64(d: Path) -> dict[str, np.ndarray]:
    files = sorted(d.glob("*.safetensors"))
    out = {}
    for f in files:
        out |= {k: v.double().numpy() for k, v in load_file(f).items()}
    return out


def expected_parts(arch: str, sd: dict[str, np.ndarray]) -> dict[tuple[str, str], tuple[int | None, str, np.ndarray]]:
    """(tensor, part) -> (layer, module, values), from the architectures' documented layouts."""
    suffix = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate",
              "up_proj": "up", "down_proj": "down", "c_fc": "up"}
    d, q, kv = 32, 32, 16  # hidden, q rows, k/v rows (2 kv heads of 8)
    out = {}
    for name, w in sd.items():
        m = re.search(r"\.(\d+)\.", name)
        layer = int(m.group(1)) if m else None
        stem = name.split(".")[-2]
        if "norm" in stem or stem.startswith("ln_"):
            out[(name, "")] = (layer, "norm", w)
        elif stem in ("embed_tokens", "wte", "wpe"):
            out[(name, "")] = (layer, "embed", w)
        elif stem == "lm_head":
            out[(name, "")] = (layer, "lm_head", w)
        elif stem == "c_attn":  # GPT-2: (in, out) columns [q|k|v], bias [q|k|v]
            for i, part in enumerate("qkv"):
                out[(name, part)] = (layer, part, w[..., i * d:(i + 1) * d])
        elif stem == "c_proj":
            out[(name, "")] = (layer, "o" if ".attn." in name else "down", w)
        elif stem == "qkv_proj":  # Phi-3: rows [q | k | v]
            for part, (a, b) in zip("qkv", [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]):
                out[(name, part)] = (layer, part, w[a:b])
        elif stem == "gate_up_proj":
            out[(name, "gate")] = (layer, "gate", w[: w.shape[0] // 2])
            out[(name, "up")] = (layer, "up", w[w.shape[0] // 2:])
        else:
            out[(name, "")] = (layer, suffix[stem], w)
    return out


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "olmo2", "gpt2", "phi3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_diff_matches_numpy_every_architecture(tmp_path: Path, arch: str) -> None:
    base, refs = build(tmp_path, arch, [0.01, 0.05])
    tol = 1e-4
    table = diff(base, refs, tmp_path / "d.csv", tolerance=tol, progress=False)
    b64 = expected_parts(arch, load64(base))
    assert len(table) == 2 * len(b64)
    for ref in refs:
        c64 = expected_parts(arch, load64(ref.path))
        t = table[table["checkpoint"] == ref.name].set_index(["tensor", "part"])
        assert set(t.index) == set(b64)
        for key, (layer, module, wb) in b64.items():
            wc = c64[key][2]
            row = t.loc[key]
            assert row["module"] == module and (pd.isna(row["layer"]) if layer is None else row["layer"] == layer)
            delta = np.linalg.norm(wc - wb)
            assert row["delta_fro"] == pytest.approx(delta, rel=1e-5)
            assert row["base_fro"] == pytest.approx(np.linalg.norm(wb), rel=1e-5)
            with np.errstate(divide="ignore"):  # zero-initialised biases: rel_change is inf
                assert row["rel_change"] == pytest.approx(delta / np.linalg.norm(wb), rel=1e-5)
            assert row["frac_changed"] == pytest.approx(np.mean(np.abs(wc - wb) > tol), abs=1e-9)
            assert row["numel"] == wb.size and row["nonfinite"] == 0 and row["tolerance"] == tol
            assert row["step"] == ref.step
    # every layer has each of the study's module types (GPT-2 has no gate)
    w = table[(table["param"] == "weight") & table["layer"].notna()]
    for _, g in w.groupby("layer"):
        assert SEVEN - {"gate"} <= set(g["module"])
        if arch != "gpt2":
            assert SEVEN <= set(g["module"])


def test_summaries_exclude_embed_norm_and_match_numpy(tmp_path: Path) -> None:
    base, refs = build(tmp_path, "phi3", [0.02, 0.04])
    out = tmp_path / "out" / "diff.csv"
    out.parent.mkdir()
    table = diff(base, refs, out, parquet=True, progress=False)
    by_module = pd.read_csv(out.with_name("diff.by_module.csv"))
    by_layer = pd.read_csv(out.with_name("diff.by_layer.csv"))
    prov = json.loads(out.with_name("diff.provenance.json").read_text())
    assert prov["config"]["tolerance"] == 1e-5 and prov["git_revision"]
    assert pd.read_parquet(out.with_suffix(".parquet")).shape == table.shape
    assert set(by_module["module"]) == SEVEN | {"all"}
    for ref in refs:
        t = table[(table["checkpoint"] == ref.name) & table["module"].isin(SEVEN) & (table["param"] == "weight")]
        for mod, g in t.groupby("module"):
            row = by_module[(by_module["checkpoint"] == ref.name) & (by_module["module"] == mod)].iloc[0]
            assert row["mean_rel_change"] == pytest.approx(np.mean(g["rel_change"].to_numpy()), rel=1e-9)
            assert row["pooled_rel_change"] == pytest.approx(
                np.sqrt((g["delta_fro"] ** 2).sum() / (g["base_fro"] ** 2).sum()), rel=1e-9)
            assert row["step"] == ref.step and row["n_matrices"] == 2
        allrow = by_module[(by_module["checkpoint"] == ref.name) & (by_module["module"] == "all")].iloc[0]
        assert allrow["mean_rel_change"] == pytest.approx(t["rel_change"].mean(), rel=1e-9)
        lm = by_layer[(by_layer["checkpoint"] == ref.name) & (by_layer["module"] == "mean")]
        for layer, g in t.groupby("layer"):
            assert lm[lm["layer"] == layer]["rel_change"].iloc[0] == pytest.approx(g["rel_change"].mean())
    assert not by_layer["module"].isin(["embed", "lm_head", "norm"]).any()


def test_sharded_and_blocked_reads_give_the_same_table(tmp_path: Path) -> None:
    base1, refs1 = build(tmp_path / "single", "llama", [0.03])
    base2, refs2 = build(tmp_path / "sharded", "llama", [0.03], shard="20KB")
    assert (base2 / "model.safetensors.index.json").is_file() and len(list(base2.glob("*.safetensors"))) > 2
    cols = ["tensor", "part", "rel_change", "delta_fro", "base_fro", "frac_changed"]
    a = diff(base1, refs1, tmp_path / "a.csv", progress=False)[cols].sort_values(["tensor", "part"])
    b = diff(base2, refs2, tmp_path / "b.csv", progress=False)[cols].sort_values(["tensor", "part"])
    c = diff(base2, refs2, tmp_path / "c.csv", chunk_elems=100, progress=False)[cols].sort_values(["tensor", "part"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), rtol=1e-6)
    pd.testing.assert_frame_equal(b.reset_index(drop=True), c.reset_index(drop=True), rtol=1e-5)


def test_base_tensor_is_read_once_for_many_checkpoints(tmp_path: Path, monkeypatch) -> None:
    base, refs = build(tmp_path, "llama", [0.01, 0.02, 0.03])
    reads: dict[tuple[str, str], int] = {}
    orig = MappedWeights.rows

    def counting(self, name, start, stop):
        reads[(str(self.w.dir), name)] = reads.get((str(self.w.dir), name), 0) + 1
        return orig(self, name, start, stop)

    monkeypatch.setattr(MappedWeights, "rows", counting)
    diff(base, refs, tmp_path / "d.csv", chunk_elems=500, progress=False)
    wf = WeightFiles(base)
    for name in wf.names():
        blocks = len(row_blocks(wf.shape(name), 500))
        assert reads[(str(base), name)] == blocks
        for r in refs:
            assert reads[(str(r.path), name)] == blocks


def test_bf16_update_below_resolution_is_reported_with_its_tolerance(tmp_path: Path) -> None:
    """A one-ulp bf16 change in 3% of entries: invisible to bf16 arithmetic on norms, exact in float32."""
    base, _ = build(tmp_path, "llama", [], dtype=torch.bfloat16)
    sd = load_file(base / "model.safetensors")
    name = "model.layers.1.self_attn.k_proj.weight"
    w = sd[name]
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(w.shape, generator=g) < 0.03
    bumped = torch.nextafter(w.float(), torch.full_like(w.float(), torch.inf)).to(torch.bfloat16)
    bumped = torch.where(bumped == w, (w.float() * (1 + 2**-7)).to(torch.bfloat16), bumped)  # next bf16 up
    new = torch.where(mask, bumped, w)
    assert (new != w).sum() == mask.sum()
    # the whole norm does not move in bf16: a norm-based comparison in bf16 would report zero
    assert torch.linalg.vector_norm(new).item() == torch.linalg.vector_norm(w).item()
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text((base / "config.json").read_text())
    save_file(sd | {name: new}, str(ck / "model.safetensors"), metadata={"format": "pt"})
    for tol in (0.0, 1.0):
        t = diff(base, [ModelRef(ck, "ck")], tmp_path / f"d{tol}.csv", tolerance=tol, progress=False)
        row = t[t["tensor"] == name].iloc[0]
        d64 = new.double().numpy() - w.double().numpy()
        assert row["rel_change"] == pytest.approx(np.linalg.norm(d64) / np.linalg.norm(w.double().numpy()), rel=1e-6)
        assert row["rel_change"] > 0 and row["tolerance"] == tol and row["dtype"] == "BF16"
        assert row["frac_changed"] == pytest.approx(mask.float().mean().item() if tol == 0 else 0.0)
        assert (t[t["tensor"] != name]["rel_change"] == 0).all()


def test_nan_and_inf_are_counted_not_fatal(tmp_path: Path, capsys) -> None:
    base, refs = build(tmp_path, "qwen2", [0.02])
    f = refs[0].path / "model.safetensors"
    sd = load_file(f)
    q, b = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.bias"
    sd[q][0, :3] = torch.nan
    sd[q][5, 7] = torch.inf
    sd[b][2] = -torch.inf
    save_file(sd, str(f), metadata={"format": "pt"})
    table = diff(base, refs, tmp_path / "d.csv", progress=False).set_index("tensor")
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 2 and f"{q} has 4 non-finite" in warned[0] + warned[1] and f"{b} has 1" in "".join(warned)
    assert table.loc[q, "nonfinite"] == 4 and table.loc[b, "nonfinite"] == 1
    assert (table.drop(index=[q, b])["nonfinite"] == 0).all()
    wb, wc = load64(base)[q], sd[q].double().numpy()
    ok = np.isfinite(wc)
    expect = np.linalg.norm((wc - wb)[ok]) / np.linalg.norm(wb)
    assert table.loc[q, "rel_change"] == pytest.approx(expect, rel=1e-5)
    by_module = pd.read_csv(tmp_path / "d.by_module.csv")
    assert by_module[by_module["module"] == "q"]["nonfinite"].iloc[0] == 4


def test_cli_run_dir_and_bad_input(tmp_path: Path, capsys) -> None:
    base, refs = build(tmp_path / "m", "llama", [0.01, 0.02])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for i, r in enumerate(refs):
        r.path.rename(run / "checkpoints" / f"step-{10 * (i + 1):06d}")
    out = tmp_path / "o" / "d.csv"
    assert main(["diff", str(base), str(run), "--out", str(out), "--tolerance", "0"]) == 0
    t = pd.read_csv(out)
    assert sorted(t["step"].unique()) == [10, 20] and (t["tolerance"] == 0).all()
    assert t["checkpoint"].iloc[0] == "run/step-000010"
    assert len(resolve_models([run])) == 2

    def err(*args: str) -> str:
        capsys.readouterr()
        assert main(["diff", *args, "--out", str(tmp_path / "bad.csv")]) == 2
        e = capsys.readouterr().err
        assert e.startswith("error: ") and e.count("\n") == 1 and "Traceback" not in e
        return e

    # a different architecture (Qwen2 adds q/k/v biases): names the first differing tensor
    other, _ = build(tmp_path / "q", "qwen2", [])
    assert "model.layers.0.self_attn.k_proj.bias" in err(str(other), str(base))
    # different shapes
    wider = tmp_path / "wide"
    from transformers import AutoModelForCausalLM, LlamaConfig
    AutoModelForCausalLM.from_config(LlamaConfig(**KW | {"intermediate_size": 64})).save_pretrained(wider)
    e = err(str(base), str(wider))
    assert "model.layers.0.mlp.down_proj.weight" in e and "[32, 48]" in e and "[32, 64]" in e
    # a missing tensor
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "config.json").write_text((base / "config.json").read_text())
    sd = load_file(base / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, str(gone / "model.safetensors"))
    assert "model.layers.1.mlp.up_proj.weight" in err(str(base), str(gone))
    # a directory with no weights, and a path that is no model at all
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert "no *.safetensors" in err(str(base), str(empty))
    assert "neither a model directory" in err(str(base), str(tmp_path / "o"))
    # an index that names a tensor its shard does not hold
    bad_idx = tmp_path / "idx"
    bad_idx.mkdir()
    (bad_idx / "config.json").write_text("{}")
    save_file({"a.weight": torch.zeros(2, 2)}, str(bad_idx / "s.safetensors"))
    (bad_idx / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a.weight": "s.safetensors", "b.weight": "s.safetensors"}}))
    assert "b.weight" in err(str(bad_idx), str(bad_idx))


def test_weightfiles_rows_reads_row_ranges_exactly(tmp_path: Path) -> None:
    sd = {"a": torch.randn(7, 5).to(torch.bfloat16), "b": torch.randn(9, 2, 3), "s": torch.tensor(2.5),
          "n": torch.randn(4).half()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    w = WeightFiles(tmp_path)
    assert torch.equal(w.rows("a", 2, 6), sd["a"][2:6]) and w.rows("a", 2, 6).dtype == torch.bfloat16
    assert torch.equal(w.rows("b", 3, 9, torch.float32), sd["b"][3:])
    assert torch.equal(w.rows("s", 0, 1), sd["s"].reshape(1)) and torch.equal(w.rows("n", 1, 3), sd["n"][1:3])
    m = MappedWeights(w)
    assert torch.equal(m.rows("a", 2, 6), sd["a"][2:6]) and torch.equal(m.rows("b", 0, 9), sd["b"])
    m.willneed("b", 0, 9)
    m.release("b", 0, 9)
    assert torch.equal(m.rows("b", 4, 5), sd["b"][4:5])  # released pages are read again from the file


def test_synthetic_llama_pair_is_a_loadable_sharded_model(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from transformers import AutoModelForCausalLM

    from bench.synthetic import make_llama_pair

    base, ckpts = make_llama_pair(tmp_path, "tiny", shard_bytes=20_000, n_checkpoints=2)
    assert (base / "model.safetensors.index.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(ckpts[1])
    assert model.config.num_key_value_heads == 2 and model.dtype == torch.bfloat16
    t = diff(base, resolve_models(ckpts), tmp_path / "d.csv", progress=False)
    q = t[t["module"] == "q"].groupby("checkpoint")["rel_change"].mean()
    assert q["ckpt-2"] == pytest.approx(2 * q["ckpt-1"], rel=0.05)  # a straight-line trajectory
    assert set(t[t["layer"].notna() & (t["param"] == "weight")]["module"]) == SEVEN | {"norm"}


def test_mixed_stored_dtypes_are_compared_exactly(tmp_path: Path) -> None:
    """A float32 base against a bf16 checkpoint (e.g. saved by a bf16 trainer): diff of the stored values."""
    base, _ = build(tmp_path, "mistral", [])
    sd = load_file(base / "model.safetensors")
    ck = tmp_path / "bf16"
    ck.mkdir()
    (ck / "config.json").write_text((base / "config.json").read_text())
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(ck / "model.safetensors"))
    t = diff(base, [ModelRef(ck, "bf16")], tmp_path / "d.csv", tolerance=0.0, progress=False).set_index("tensor")
    for name, w in sd.items():
        w64 = w.double().numpy()
        d = w.to(torch.bfloat16).double().numpy() - w64
        assert t.loc[name, "delta_fro"] == pytest.approx(np.linalg.norm(d), rel=1e-5)
        assert t.loc[name, "dtype"] == "BF16"
