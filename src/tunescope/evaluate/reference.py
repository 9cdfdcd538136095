"""What a sweep measures every checkpoint against: its reference model (the base), prepared once.

    ref = load_reference(path, out, prepared, tasks, tok, cfg)   # None when there is nothing to compare
    dist_cols, repr_rows = ref.measure(engine.hf())               # per checkpoint

Prepared once per sweep: the reference model; the KL prompts with their gold responses and, with
`kl_sampled`, one T = 1 sample of the reference per prompt (kept in reference_samples.jsonl so that
a resumed sweep scores along the same samples); the reference's log-probs along both, when they fit
in 256 MB; the CKA prompts of each suite and the reference's
pooled hidden states on them. Per checkpoint: KL(reference || checkpoint) along the gold and the
sampled responses (evaluate/distribution.py) and, at final models (every checkpoint with `cka_every`),
per-layer linear CKA (evaluate/representations.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunescope.errors import UserError
from tunescope.evaluate.prepare import Suite, prepare_kl

if TYPE_CHECKING:
    from tunescope.evaluate.engine import HFEngine
    from tunescope.evaluate.run import EvalConfig
    from tunescope.world.task import Task


@dataclass
class Reference:
    path: Path
    engine: HFEngine
    cfg: EvalConfig
    kl_ctx: list[list[int]] = field(default_factory=list)  # prompt ids of the KL items
    kl_resp: list[list[int]] = field(default_factory=list)  # their gold responses (+ end of sequence)
    fkl_resp: list[list[int]] = field(default_factory=list)  # one sample of the reference per prompt
    cka_prompts: dict[str, list[list[int]]] = field(default_factory=dict)  # suite -> prompt ids
    cka_states: dict[str, np.ndarray] = field(default_factory=dict)  # suite -> (N, layers + 1, H)
    # the reference's log-probs along kl_resp and fkl_resp, computed once (None: too large to keep)
    kl_lp: list | None = None
    fkl_lp: list | None = None

    def measure(self, hf: HFEngine, cka: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A checkpoint's distribution columns (kl*, fkl*, n_tokens) and, with `cka`, its CKA rows
        (suite, layer, cka, n_items)."""
        from tunescope.evaluate.representations import K_LAST, cka_by_layer

        cols: dict[str, Any] = {}
        if self.kl_ctx:
            cols.update(_kl_columns("kl", self.engine, hf, self.kl_ctx, self.kl_resp, self.cfg, self.kl_lp))
            cols["n_tokens"] = sum(map(int, cols["kl_item_tokens"].split()))
        if self.fkl_resp:
            cols.update(_kl_columns("fkl", self.engine, hf, self.kl_ctx, self.fkl_resp, self.cfg, self.fkl_lp))
        rows = []
        for suite, prompts in (self.cka_prompts if cka else {}).items():
            states = hf.pooled_hidden_states(prompts, K_LAST, batch_size=self.cfg.batch_size)
            if states.shape[1:] != self.cka_states[suite].shape[1:]:
                raise UserError(f"{hf.path}: hidden states of shape {states.shape[1:]} differ from the reference's "
                                f"{self.cka_states[suite].shape[1:]}; CKA needs checkpoints of the same base model")
            rows += [{"suite": suite, "layer": j, "cka": c, "n_items": len(prompts)}
                     for j, c in enumerate(cka_by_layer(self.cka_states[suite], states))]
        return cols, rows


def load_reference(path: Path | None, out: Path, prepared: list[Suite], tasks: dict[str, Task], tok: Any,
                   cfg: EvalConfig, render: Any) -> Reference | None:
    """The sweep's reference, or None without a reference model or with nothing to measure against it."""
    if path is None:
        return None
    names = [s.name for s in prepared]
    unknown = [s for s in cfg.cka_suites if s not in names]
    if unknown:
        raise UserError(f"cka_suites {', '.join(unknown)} are not among the evaluated suites ({', '.join(names)})")
    kl_ctx, kl_resp = prepare_kl(prepared, tasks, tok, cfg, render)
    from tunescope.evaluate.representations import anchored

    cka = {s.name: anchored(s.prompts[:cfg.cka_items]) for s in prepared
           if cfg.cka_items and s.name in (cfg.cka_suites or names)}
    if not kl_ctx and not cka:
        return None
    from tunescope.evaluate.representations import K_LAST

    ref = Reference(Path(path), _load(path, tok, cfg), cfg, kl_ctx, kl_resp, cka_prompts=cka)
    if kl_ctx and cfg.kl_sampled:
        ref.fkl_resp = _samples(out, ref.engine, kl_ctx, tok, cfg)
    if kl_ctx:
        from tunescope.evaluate.distribution import reference_logprobs

        ref.kl_lp = reference_logprobs(ref.engine, kl_ctx, kl_resp, cfg.batch_size)
        ref.fkl_lp = reference_logprobs(ref.engine, kl_ctx, ref.fkl_resp, cfg.batch_size) if ref.fkl_resp else None
    ref.cka_states = {s: ref.engine.pooled_hidden_states(p, K_LAST, batch_size=cfg.batch_size) for s, p in cka.items()}
    return ref


def _load(path: Path, tok: Any, cfg: EvalConfig) -> HFEngine:
    from tunescope.evaluate.engine import HFEngine

    try:
        return HFEngine(path, tok, cfg.device, cfg.dtype)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the reference model {path}: {str(e).splitlines()[0]}") from None


def _samples(out: Path, ref: HFEngine, contexts: list[list[int]], tok: Any, cfg: EvalConfig) -> list[list[int]]:
    """One sampled response (T = 1; token ids, + end of sequence unless truncated) of the reference to
    each KL prompt, for the forward KL of RL's Razor. Drawn once per sweep and kept in
    reference_samples.jsonl, so a resumed sweep scores its remaining checkpoints along the same samples."""
    import os

    from tunescope.fsutil import whole_lines

    f = out / "reference_samples.jsonl"
    if f.exists():
        rows = [json.loads(line) for line in whole_lines(f)]
        if len(rows) == len(contexts):
            return [r["ids"] for r in rows]
    gens = ref.generate(contexts, max_new_tokens=cfg.max_new_tokens, temperature=1.0, top_p=1.0,
                        batch_size=cfg.batch_size, seed=cfg.seed, progress="reference samples for the forward KL")
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids = [list(g[0].ids) + ([] if g[0].truncated else eos) for g in gens]
    tmp = out / ".reference_samples.jsonl.tmp"  # written whole, then renamed: a kill leaves no half file
    tmp.write_text("".join(json.dumps({"item": i, "ids": r, "text": g[0].text}) + "\n"
                           for i, (r, g) in enumerate(zip(ids, gens))))
    os.replace(tmp, f)
    return ids


def _kl_columns(name: str, ref: HFEngine, hf: HFEngine, contexts: list[list[int]], responses: list[list[int]],
                cfg: EvalConfig, ref_lp: list | None = None) -> dict[str, Any]:
    """Token-pooled KL(reference || model) along `responses` with its 95% interval, and per item its
    sum and token count (same items and order for every model of a sweep, so two models' KL can pair)."""
    from tunescope.evaluate.distribution import pooled_kl, teacher_forced_kl

    sums, counts = teacher_forced_kl(ref, hf, contexts, responses, batch_size=cfg.batch_size, ref_lp=ref_lp)
    kl, lo, hi = pooled_kl(sums, counts, seed=cfg.seed, n_resamples=cfg.bootstrap)
    return {name: kl, f"{name}_ci_low": lo, f"{name}_ci_high": hi,
            f"{name}_item_sums": " ".join(f"{x:.9g}" for x in sums), f"{name}_item_tokens": " ".join(map(str, counts))}
