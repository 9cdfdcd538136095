"""`RUN:best_ood` picks the OOD peak on the items whose id hashes even, never on the items the report
measures it on (the winner's curse): a checkpoint that is best on all items only thanks to the
measuring half is not picked."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pandas as pd

from tunescope.checkpoints import ModelRef
from tunescope.study.refs import pick_checkpoint


def _eval_dir(tmp_path: Path, per_step: dict[int, dict[str, float]]) -> dict:
    """An evaluation directory (samples.jsonl, scores.csv) with these per-item OOD scores per step."""
    samples, scores = [], []
    for step, items in per_step.items():
        path = str(tmp_path / f"step-{step:06d}")
        samples += [{"path": path, "suite": "ood", "item_id": i, "score": s, "mode": "generate"} for i, s in items.items()]
        scores.append({"path": path, "step": step, "suite": "ood", "metric": "accuracy",
                       "value": sum(items.values()) / len(items)})
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    pd.DataFrame(scores).to_csv(tmp_path / "scores.csv", index=False)
    return {"dir": str(tmp_path)}


def test_best_ood_is_picked_on_the_picking_half_only(tmp_path):
    ids = [f"ood:{i}" for i in range(40)]
    pick = [i for i in ids if zlib.crc32(i.encode()) % 2 == 0]
    measure = [i for i in ids if i not in pick]
    assert 10 < len(pick) < 30
    # step 10: right on half the picking items; step 20: on a third of them but on every measuring item,
    # so it is best on all items together and worse on the picking half
    a = {i: float(k % 2 == 0) for k, i in enumerate(pick)} | {i: 0.0 for i in measure}
    b = {i: float(k % 3 == 0) for k, i in enumerate(pick)} | {i: 1.0 for i in measure}
    rec = _eval_dir(tmp_path, {0: dict.fromkeys(ids, 0.0), 10: a, 20: b})
    ckpts = [ModelRef(tmp_path / f"step-{s:06d}", f"r/{s}", s, s / 20) for s in (0, 10, 20)]
    assert sum(b.values()) > sum(a.values())
    assert pick_checkpoint(ckpts, "best_ood", rec, "ood").step == 10
