"""The GPU check (issue 15): the paths that only run on CUDA, each against its CPU or Hugging Face twin,
timed, in one script of a few minutes on one GPU. Run it wherever a CUDA GPU is at hand:

    python -m bench.gpu_check [--out DIR]          # make gpu-check; results in DIR/gpu_check.json

On a machine without CUDA it prints one line and exits 0. Every check runs the real command a user
would (`tunescope train/eval/spectrum/restore`, `accelerate launch`) on the shipped default organism
(nothing is downloaded) and is recorded as ok, failed (with the last lines of its output) or skipped
(a package it needs is not installed: `pip install -e ".[gpu]"` brings vLLM and DeepSpeed):

  sft_cuda        SFT, 20 steps, on the GPU: the checkpoints the next checks read
  eval_vllm       `tunescope eval --backend vllm` against `--backend hf` on those checkpoints, float32,
                  greedy: per checkpoint and suite the two accuracies, their paired difference and
                  whether its 95% interval holds 0 (--on-cpu: HF `generate` against the compact decoder)
  grpo_vllm       4 GRPO steps with vLLM colocated: completions were generated, rewards logged
  sft_deepspeed   SFT under DeepSpeed ZeRO-2 on one GPU (accelerate launch): it runs and its loss falls
  spectrum_cuda   `tunescope spectrum --device cuda` against `--device cpu` on the base and the last
                  checkpoint: largest difference of the singular values and of the angles
  restore_cuda    `tunescope restore --method direction --device cuda` against `--device cpu`: largest
                  weight difference
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# float32 on two devices (cuSOLVER vs LAPACK): the largest difference over every number of the spectrum's
# per-matrix table (angles in degrees, energy shares, singular-value changes), and over every restored weight
TOL = {"spectrum": 0.5, "weight": 1e-3}


def _cmd(args: list[str], log: Path, env: dict[str, str] | None = None, timeout: int = 600) -> float:
    """Run a command, its output to `log`; its wall time, or RuntimeError with the output's tail."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout,
                            env={**os.environ, **(env or {})}).returncode
    if rc != 0:
        raise RuntimeError(f"exit {rc}: " + " | ".join(log.read_text().strip().splitlines()[-3:]))
    return round(time.perf_counter() - t0, 1)


def _ts(*args: str) -> list[str]:
    return [sys.executable, "-m", "tunescope.cli", *args]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "bench_out/gpu_check")
    ap.add_argument("--on-cpu", action="store_true",
                    help="the CPU in the GPU's place: tries the script itself where there is no GPU")
    args = ap.parse_args()
    import torch

    gpu = "cpu" if args.on_cpu else "cuda"
    if not args.on_cpu and not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA GPU here (torch.cuda.is_available() is False)")
        return 0
    from tunescope.organism.build import shipped_dir

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    org = str(shipped_dir("default"))
    results: dict[str, dict] = {"env": {
        "gpu": torch.cuda.get_device_name(0) if gpu == "cuda" else "none (--on-cpu)", "torch": torch.__version__,
        **{p: _version(p) for p in ("transformers", "trl", "accelerate", "vllm", "deepspeed")}}}
    budget = ["max_steps=20", "checkpoint_every=0.5", "n_train_items=256", "lr=1.0e-3", "prompts_per_step=16"]
    run = out / "sft"

    def check(name: str, needs: str | None, fn) -> None:
        if needs and find_spec(needs) is None:
            results[name] = {"status": f"skipped: {needs} is not installed (pip install -e '.[gpu]')"}
        else:
            try:
                results[name] = {"status": "ok", **fn()}
            except Exception as e:  # noqa: BLE001 - every failure is recorded, the other checks go on
                results[name] = {"status": f"failed: {type(e).__name__}: {e}"}
        print(f"{name:14s} {json.dumps(results[name])}", flush=True)

    def sft_cuda() -> dict:
        s = _cmd(_ts("train", "sft", "--model", org, "--out", str(run), "--config", "default", *budget), out / "sft.log")
        return {"seconds": s}

    def eval_vllm() -> dict:
        import pandas as pd

        common = ["--suite", "maths,game24", "n=200", "kl_items=0", "cka_items=0", "dtype=float32",
                  "max_new_tokens=96", "batch_size=128"]
        t_hf = _cmd(_ts("eval", str(run), "--out", str(out / "ev_hf"), "backend=hf", *common), out / "ev_hf.log")
        other = ["backend=hf", "compact=false"] if args.on_cpu else ["backend=vllm"]  # --on-cpu: HF generate
        t_v = _cmd(_ts("eval", str(run), "--out", str(out / "ev_vllm"), *other, *common), out / "ev_vllm.log")
        rows = []
        a, b = (pd.read_csv(out / d / "scores.csv") for d in ("ev_hf", "ev_vllm"))
        sa, sb = ([json.loads(x) for x in (out / d / "samples.jsonl").open()] for d in ("ev_hf", "ev_vllm"))
        from tunescope.evaluate.stats import paired_diff

        for (step, suite), g in a[a.metric == "accuracy"].groupby(["step", "suite"]):
            h = g.iloc[0]
            v = b[(b.metric == "accuracy") & (b.step == step) & (b.suite == suite)].iloc[0]
            x = {r["item_id"]: r["score"] for r in sa if r["step"] == step and r["suite"] == suite}
            y = {r["item_id"]: r["score"] for r in sb if r["step"] == step and r["suite"] == suite}
            ids = sorted(x.keys() & y.keys())
            diff = paired_diff([y[i] for i in ids], [x[i] for i in ids])
            d, lo, hi = diff.value, diff.low, diff.high
            rows.append({"step": int(step), "suite": suite, "hf": round(h.value, 3), "vllm": round(v.value, 3),
                         "diff": round(d, 3), "ci": [round(lo, 3), round(hi, 3)], "holds_0": bool(lo <= 0 <= hi)})
        return {"seconds_hf": t_hf, "seconds_vllm": t_v, "all_hold_0": all(r["holds_0"] for r in rows), "rows": rows}

    def grpo_vllm() -> dict:
        g = out / "grpo"
        s = _cmd(_ts("train", "grpo", "--model", org, "--out", str(g), "--config", "default", "max_steps=4",
                     "checkpoint_every=1.0", "grpo.use_vllm=true", "grpo.vllm_mode=colocate",
                     "grpo.compact_rollouts=false"), out / "grpo.log")
        log = [json.loads(x) for x in (g / "log.jsonl").open()]
        assert all(r["tokens_generated"] > 0 for r in log), "a step generated nothing"
        return {"seconds": s, "steps": len(log), "reward_mean": [round(r["reward_mean"], 3) for r in log]}

    def sft_deepspeed() -> dict:
        d = out / "ds"
        s = _cmd([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(REPO / "configs/accelerate/deepspeed_zero2.yaml"), "--num_processes", "1",
                  "-m", "tunescope.cli", "train", "sft", "--model", org, "--out", str(d), "--config", "default",
                  *budget], out / "ds.log")
        log = [json.loads(x) for x in (d / "log.jsonl").open()]
        first, last = log[0]["loss"], log[-1]["loss"]
        assert last < first, f"loss did not fall ({first:.3f} -> {last:.3f})"
        return {"seconds": s, "loss_first": round(first, 3), "loss_last": round(last, 3)}

    def last_checkpoint() -> str:
        from tunescope.checkpoints import list_checkpoints

        return str(list_checkpoints(run)[-1].path)

    def spectrum_cuda() -> dict:
        import pandas as pd

        t = {}
        for name, dev in (("cuda", gpu), ("cpu", "cpu")):
            t[name] = _cmd(_ts("spectrum", org, last_checkpoint(), "--out", str(out / f"sp_{name}.csv"),
                               "--device", dev, "--null-draws", "0"), out / f"sp_{name}.log")
        a, b = pd.read_csv(out / "sp_cuda.csv"), pd.read_csv(out / "sp_cpu.csv")
        num = [c for c in a.columns if a[c].dtype.kind == "f"]
        worst = float((a[num] - b[num]).abs().max().max())
        return {"seconds_cuda": t["cuda"], "seconds_cpu": t["cpu"], "max_abs_diff": worst,
                "within_tolerance": worst <= TOL["spectrum"]}

    def restore_cuda() -> dict:

        from tunescope.weights import WeightFiles

        t = {}
        for name, dev in (("cuda", gpu), ("cpu", "cpu")):
            t[name] = _cmd(_ts("restore", org, last_checkpoint(), "--out", str(out / f"rs_{name}"), "--method",
                               "direction", "--k", "0.2", "--device", dev), out / f"rs_{name}.log")
        a, b = dict(WeightFiles(out / "rs_cuda").iter()), dict(WeightFiles(out / "rs_cpu").iter())
        worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        return {"seconds_cuda": t["cuda"], "seconds_cpu": t["cpu"], "max_abs_diff": worst,
                "within_tolerance": worst <= TOL["weight"]}

    t0 = time.perf_counter()
    check("sft_cuda", None, sft_cuda)
    have_run = results["sft_cuda"]["status"] == "ok"
    for name, needs, fn in (("eval_vllm", None if args.on_cpu else "vllm", eval_vllm), ("grpo_vllm", "vllm", grpo_vllm),
                            ("sft_deepspeed", "deepspeed", sft_deepspeed), ("spectrum_cuda", None, spectrum_cuda),
                            ("restore_cuda", None, restore_cuda)):
        if not have_run and name in ("eval_vllm", "spectrum_cuda", "restore_cuda"):
            results[name] = {"status": "skipped: sft_cuda failed, no checkpoints to compare"}
            continue
        check(name, needs, fn)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(f"gpu_check: {sum(r.get('status') == 'ok' for r in results.values() if isinstance(r, dict))} ok of 6 "
          f"in {results['wall_s']} s; {out / 'gpu_check.json'}")
    return 0 if all(str(r.get("status", "ok")).startswith(("ok", "skipped")) for r in results.values()
                    if isinstance(r, dict)) else 1


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
