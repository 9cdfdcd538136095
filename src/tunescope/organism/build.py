"""Build the model organism once per configuration: tokenizer -> pretraining -> model directory.

    from tunescope.organism import build
    path = build("default")          # ~/.cache/tunescope/organisms/default-<hash>/

The result is a standard Hugging Face model directory (config.json, model.safetensors,
generation_config.json, tokenizer files with a chat template) plus `tunescope.json`, the sidecar
with the recipe, seed, versions, git revision, pretraining stats and a sha256 of every file.

Identity: the directory name carries a hash of the recipe, the seed, the model config, the token
format (special tokens and chat template) and the *content* of what the organism is trained on
(every pretraining example and every tokenizer text; `corpus_digest`), so a refactor that leaves
all of them unchanged keeps the key and any change to the corpus makes a new organism. A change
to the training loop alone keeps the key: rebuild with `tunescope organism build --rebuild` to
see whether it changes the weights.

Shipped organisms: the default organism is built once and shipped in the package
(`tunescope/organism/shipped/default/`, written by `bench/bench_organism.py ship`), so a fresh
clone uses the same weights everywhere instead of retraining with this CPU's float kernels.
`build` returns it whenever its sidecar's key equals the key the current code computes; when the
code would generate another corpus it says so and builds from the recipe into the cache.

Caching: a cache hit is verified against the sidecar's checksums; a corrupt entry is reported on
stderr, deleted and rebuilt, never used. Builds are written with `atomic_dir` and serialised with
a file lock, so concurrent test sessions never see a half-written organism.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tunescope.config import config_hash, to_dict
from tunescope.errors import UserError
from tunescope.fsutil import atomic_dir, check_writable_parent, sha256_file
from tunescope.provenance import provenance, write_json

SIDECAR = "tunescope.json"
REQUIRED = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines an organism. Its hash names the cache entry."""

    preset: str  # model size, a builder in tunescope.organism.model.MODELS
    vocab_size: int  # BPE vocabulary including special and format tokens
    corpus: str  # a named mixture of tunescope.world.corpus.SIZES (counts of examples per source)
    epochs: float  # passes over the packed corpus; more memorises facts better, costs linear time
    batch_size: int  # blocks of `context` tokens per optimiser step
    lr: float  # peak AdamW learning rate, cosine-decayed to 0
    warmup: float  # fraction of steps of linear warm-up
    weight_decay: float  # AdamW decoupled weight decay


PRESETS: dict[str, Recipe] = {
    "smoke": Recipe(preset="smoke", vocab_size=512, corpus="smoke", epochs=1.0, batch_size=8,
                    lr=3e-3, warmup=0.1, weight_decay=0.0),
    "default": Recipe(preset="default", vocab_size=2048, corpus="default", epochs=4.0, batch_size=8,
                      lr=3e-3, warmup=0.03, weight_decay=0.1),
}


def recipe_for(preset: str) -> Recipe:
    """The recipe of a named preset; a UserError listing the presets otherwise."""
    if preset not in PRESETS:
        raise UserError(f"unknown organism preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


def cache_root() -> Path:
    """`$TUNESCOPE_CACHE/organisms` (TUNESCOPE_CACHE defaults to ~/.cache/tunescope)."""
    base = os.environ.get("TUNESCOPE_CACHE") or Path.home() / ".cache" / "tunescope"
    return Path(base) / "organisms"


SHIPPED = Path(__file__).resolve().parent / "shipped"  # organisms shipped with the package, by preset
REBUILD_HINT = "tunescope organism build --preset default --rebuild, then .venv/bin/python bench/bench_organism.py ship"


@cache
def corpus_digest(corpus_name: str, seed: int) -> str:
    """sha256 of everything an organism is trained on: the pretraining examples of `corpus_name`
    (in order) and the tokenizer's training texts. Content only: source edits that leave both
    unchanged keep the digest."""
    from tunescope.world import corpus

    h = hashlib.sha256()
    for example in corpus.pretraining_examples(seed, corpus_name):
        h.update(json.dumps(example, sort_keys=True).encode() + b"\0")
    h.update(b"\0tokenizer\0")
    for text in corpus.tokenizer_texts(seed):
        h.update(text.encode() + b"\0")
    return h.hexdigest()


def _model_config(recipe: Recipe) -> dict[str, Any]:
    """The model config a recipe asks for, without the library version that wrote it."""
    from tunescope.organism.model import MODELS

    config = MODELS[recipe.preset](recipe.vocab_size).to_diff_dict()
    config.pop("transformers_version", None)
    return config


def cache_key(recipe: Recipe, seed: int) -> str:
    """`<preset>-<hash>`: the name of an organism, a hash of its recipe, seed, model config, corpus
    and token format (special tokens, chat template)."""
    from tunescope.organism.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS

    ident = {"recipe": recipe, "seed": seed, "model": _model_config(recipe),
             "corpus": corpus_digest(recipe.corpus, seed),
             "format": {"special_tokens": SPECIAL_TOKENS, "chat_template": CHAT_TEMPLATE}}
    return f"{recipe.preset}-{config_hash(ident)}"


def shipped_dir(preset: str, seed: int = 0) -> Path | None:
    """The shipped organism of a preset and seed, if the package has one."""
    path = SHIPPED / preset
    return path if seed == 0 and (path / SIDECAR).exists() else None


def verify(path: Path, key: str | None = None) -> str | None:
    """None when `path` is a complete organism (matching `key` if given), else what is wrong."""
    try:
        side = json.loads((path / SIDECAR).read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {SIDECAR} ({e.__class__.__name__})"
    if not isinstance(side, dict) or side.get("kind") != "organism" or not isinstance(side.get("files"), dict):
        return f"{SIDECAR} is not an organism sidecar"
    if key is not None and side.get("cache_key") != key:
        return f"{SIDECAR} belongs to {side.get('cache_key')!r}, not {key!r}"
    files = side["files"]
    for name in REQUIRED:
        if name not in files:
            return f"{SIDECAR} lists no {name}"
    for name, digest in files.items():
        try:
            if sha256_file(path / name) != digest:
                return f"{name} does not match its checksum"
        except OSError:
            return f"{name} is missing or unreadable"
    return None


def _log(msg: str) -> None:
    print(f"[organism] {msg}", file=sys.stderr, flush=True)


def _make(recipe: Recipe, seed: int, key: str, dest: Path) -> None:
    """Train the tokenizer and the model and write the organism into the empty directory `dest`."""
    from transformers import GenerationConfig

    from tunescope.organism.model import MODELS
    from tunescope.organism.pretrain import pack, pretrain
    from tunescope.organism.tokenizer import train_tokenizer
    from tunescope.world import corpus

    t0 = time.perf_counter()
    _log(f"building {key}: corpus")
    examples = corpus.pretraining_examples(seed, recipe.corpus)

    _log(f"tokenizer: byte-level BPE, vocab {recipe.vocab_size}")
    model_config = MODELS[recipe.preset](recipe.vocab_size)
    context = model_config.max_position_embeddings
    tokenizer = train_tokenizer(corpus.tokenizer_texts(seed), recipe.vocab_size, context)
    model_config.vocab_size = len(tokenizer)  # BPE may stop short of the target on a small corpus

    blocks = pack(tokenizer, examples, context, seed)  # (N, T)
    _log(f"pretraining: {blocks.shape[0]} blocks x {context} tokens x {recipe.epochs} epochs")
    model, stats = pretrain(model_config, blocks, seed=seed, epochs=recipe.epochs, batch_size=recipe.batch_size,
                            lr=recipe.lr, warmup=recipe.warmup, weight_decay=recipe.weight_decay,
                            desc=f"pretrain {recipe.preset}")

    _log(f"saving (final loss {stats['final_loss']})")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=256)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    files = {p.name: sha256_file(p) for p in sorted(dest.iterdir()) if p.is_file()}
    stats["build_wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(dest / SIDECAR, provenance(
        config=to_dict(recipe), seed=seed, kind="organism", cache_key=key,
        model_config=model_config.to_diff_dict(),
        corpus={"examples": len(examples), "mixture": corpus_mixture(examples),
                "digest": corpus_digest(recipe.corpus, seed)},
        pretraining=stats, files=files))


def corpus_mixture(examples: list[dict]) -> dict[str, int]:
    """Counts of examples by kind (the `domain` field when the world provides one)."""
    counts: dict[str, int] = {}
    for ex in examples:
        name = ex.get("domain") or ("chat" if "messages" in ex else "text")
        counts[name] = counts.get(name, 0) + 1
    return counts


def _weights_match(a: Path, b: Path) -> str:
    """'bit-identical' or how the weights of two organism directories differ."""
    from safetensors.numpy import load_file

    if sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors"):
        return "bit-identical to the shipped weights"
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if wa.keys() != wb.keys() or any(wa[k].shape != wb[k].shape for k in wa):
        return "differs from the shipped weights in its tensors' names or shapes"
    worst = max(float(abs(wa[k].astype("float64") - wb[k].astype("float64")).max()) for k in wa)
    return f"differs from the shipped weights (largest |difference| {worst:.3g}; float kernels differ between CPUs)"


def _from_cache(recipe: Recipe, seed: int, key: str, rebuild: bool) -> Path:
    """The cached organism under `key`, built (or, with `rebuild`, retrained) under a file lock."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create cache directory {root}: {e.strerror}; set TUNESCOPE_CACHE") from None
    path = root / key
    with open(root / f".{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process that is building {key}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and (problem := verify(path, key)) is not None:
            _log(f"cache entry {path} is corrupt ({problem}); rebuilding it")
            shutil.rmtree(path)
        if path.exists() and not rebuild:
            _log(f"cached: {path}")
        else:  # a rebuild replaces the cached entry only once the new one is complete
            with atomic_dir(path, overwrite=True) as tmp:
                _make(recipe, seed, key, tmp)
            _log(f"built: {path}")
    return path


def _shipped(preset: str, seed: int, key: str) -> Path | None:
    """The shipped organism when it is the one the current code would build, else None (said why)."""
    path = shipped_dir(preset, seed)
    if path is None:
        return None
    problem = verify(path)  # complete and intact, whatever it is
    if problem is not None:
        _log(f"the shipped {preset} organism is corrupt ({problem}); building from the recipe")
        return None
    shipped_key = describe(path).get("cache_key")
    if shipped_key != key:
        _log(f"the shipped {preset} organism ({shipped_key}) was trained on another corpus or recipe than this "
             f"code generates ({key}); building from the recipe (to ship a new one: {REBUILD_HINT})")
        return None
    _log(f"shipped: {path}")
    return path


def available(preset: str, seed: int = 0) -> Path | None:
    """The organism of (`preset`, `seed`) if it is shipped or cached and intact, without building it."""
    key = cache_key(recipe_for(preset), seed)
    for path in (shipped_dir(preset, seed), cache_root() / key):
        if path is not None and path.is_dir() and verify(path, key) is None:
            return path
    return None


def build(preset: str = "smoke", out: Path | None = None, seed: int = 0, rebuild: bool = False) -> Path:
    """Return the directory of the organism for (`preset`, `seed`): the shipped one when the
    package holds it for this code's corpus, else the cached one, built if not cached.

    With `rebuild`, retrain it from the recipe into the cache whatever is shipped or cached, and
    say whether the weights are bit-identical to the shipped ones. With `out`, the organism is
    also copied there (which must not exist or be empty) and `out` is returned.
    """
    recipe = recipe_for(preset)
    if out is not None:
        out = Path(out)
        check_writable_parent(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"output directory {out} exists and is not empty; remove it or choose another --out")
    key = cache_key(recipe, seed)
    path = None if rebuild else _shipped(preset, seed, key)
    if path is None:
        path = _from_cache(recipe, seed, key, rebuild)
    if rebuild and (shipped := shipped_dir(preset, seed)) is not None:
        _log(f"rebuilt {key}: {_weights_match(path, shipped)}")
    if out is None:
        return path
    with atomic_dir(out, overwrite=True) as tmp:
        for item in path.iterdir():
            shutil.copy2(item, tmp / item.name)
    _log(f"copied to {out}")
    return out


def describe(path: Path) -> dict[str, Any]:
    """The sidecar of an organism directory."""
    return json.loads((Path(path) / SIDECAR).read_text())

