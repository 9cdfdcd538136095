"""Benchmark `tunescope diff` on a synthetic 1B-parameter Llama (Llama-3.2-1B shapes, bf16, 1 GB shards).

Measures, each with the page cache warm (files just read) and cold (our files evicted with
posix_fadvise, so they come from disk):
  - raw read rate: safetensors `get_tensor` of every tensor of base + one checkpoint (bytes/s);
  - diff throughput: the same bytes through `diff(base, [ckpt])`, as a fraction of the raw rate
    (goal >= 0.70);
  - peak RSS of the diff process against 3x the largest tensor (goal: peak - overhead <= 3x);
  - a K-checkpoint diff against K single diffs (the base is read once instead of K times);
  - `spectrum` against the bare torch.linalg.svd of the same matrices, side by side in one process
    (same dtype, device and threads), on one layer of Llama-3.2-1B shapes (a whole 1B model is 16 such
    layers: 16x the time, the same ratio) and on the shipped organism against a noised copy (goal <= 1.2x).
    Measured on the 2-core development machine, 1 thread, load ~2-3: 1B layer 121 s vs
    73 s of SVDs without the null model (1.66x), 248 s vs 215 s with 3 null draws (1.16x); the organism
    0.75 s vs 0.27 s (2.8x) and 1.43 s vs 0.39 s (3.7x), its 128-wide matrices are per-call overhead.
Each diff runs in a fresh subprocess so that its peak RSS is its own; `overhead` is the RSS of
the same process after imports, before any work.

    make bench   # or: .venv/bin/python -m bench bench_analyse
    .venv/bin/python -m bench.bench_analyse spectrum   # the spectrum part alone
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.synthetic import make_llama_pair

K = 3

# Peak memory is VmHWM of the child (ru_maxrss would carry the parent's high-water mark over exec).
_CHILD = r"""
import json, re, sys, time
from pathlib import Path
from tunescope.analyse.diff import diff
from tunescope.checkpoints import resolve_models

def hwm_kb():
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))

base, out, *models = sys.argv[1:]
refs = resolve_models(models)
rss0 = hwm_kb()
t = time.perf_counter()
diff(Path(base), refs, Path(out), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "overhead_kb": rss0, "peak_kb": hwm_kb()}))
"""


def _files(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


def _evict(dirs: list[Path]) -> None:
    """Drop these files (only) from the page cache."""
    for d in dirs:
        for f in _files(d):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _raw_read(dirs: list[Path]) -> tuple[float, int]:
    """Seconds and bytes to read every tensor with safetensors into memory, one at a time.

    `get_tensor` only maps the file; `.clone()` makes it read the bytes (what loading a model does).
    """
    from safetensors import safe_open

    n, t = 0, time.perf_counter()
    for d in dirs:
        for f in _files(d):
            with safe_open(f, framework="pt") as h:
                for k in h.keys():
                    x = h.get_tensor(k).clone()
                    n += x.numel() * x.element_size()
                    del x
    return time.perf_counter() - t, n


def _file_read(dirs: list[Path]) -> tuple[float, int]:
    """Seconds and bytes to read the shard files sequentially (64 MB reads into one buffer)."""
    buf = bytearray(64 << 20)
    n, t = 0, time.perf_counter()
    for d in dirs:
        for f in _files(d):
            with open(f, "rb", buffering=0) as h:
                while got := h.readinto(buf):
                    n += got
    return time.perf_counter() - t, n


def _diff_child(base: Path | str, models: list[Path], out: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(base), str(out), *map(str, models)],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(out: Path) -> dict:
    from tunescope.weights import WeightFiles

    data = Path(out) / "synthetic-1b"
    t = time.perf_counter()
    base, ckpts = make_llama_pair(data, "1b", n_checkpoints=K)
    gen_s = time.perf_counter() - t
    w = WeightFiles(base)
    largest = max(w.nbytes(n) for n in w.names())
    model_bytes = sum(w.nbytes(n) for n in w.names())
    res: dict = {"model": "synthetic Llama-3.2-1B shapes, bf16", "params": model_bytes // 2,
                 "model_gb": round(model_bytes / 1e9, 3), "largest_tensor_mb": round(largest / 1e6, 1),
                 "generate_s": round(gen_s, 1), "cpus": os.cpu_count()}
    work = Path(out) / "analyse"
    work.mkdir(parents=True, exist_ok=True)
    pair = [base, ckpts[0]]

    for cache in ("warm", "cold"):
        if cache == "warm":
            _raw_read(pair)  # fill the cache
        else:
            _evict(pair)
        raw_s, nbytes = _raw_read(pair)
        if cache == "cold":
            _evict(pair)
        file_s, fbytes = _file_read(pair)
        if cache == "cold":
            _evict(pair)
        d = _diff_child(base, [ckpts[0]], work / f"diff-{cache}.csv")
        raw_rate, diff_rate = nbytes / raw_s, nbytes / d["seconds"]
        res[cache] = {"raw_read_gb_s": round(raw_rate / 1e9, 3), "file_read_gb_s": round(fbytes / file_s / 1e9, 3),
                      "diff_gb_s": round(diff_rate / 1e9, 3), "diff_s": round(d["seconds"], 2),
                      "fraction_of_raw": round(diff_rate / raw_rate, 3),
                      "fraction_of_file_read": round(diff_rate / (fbytes / file_s), 3)}
        if cache == "warm":
            peak, over = d["peak_kb"] * 1024, d["overhead_kb"] * 1024
            res["peak_rss_mb"] = round(peak / 1e6, 1)
            res["overhead_rss_mb"] = round(over / 1e6, 1)
            res["peak_minus_overhead_mb"] = round((peak - over) / 1e6, 1)
            res["peak_minus_overhead_over_largest_tensor"] = round((peak - over) / largest, 2)

    # peak memory does not grow with the model: the same diff on a ~100M-parameter Llama
    sb, sc = make_llama_pair(Path(out) / "synthetic-100m", "100m", n_checkpoints=1)
    sw = WeightFiles(sb)
    small_largest = max(sw.nbytes(n) for n in sw.names())
    d = _diff_child(sb, sc, work / "diff-100m.csv")
    res["100m"] = {"largest_tensor_mb": round(small_largest / 1e6, 1), "diff_s": round(d["seconds"], 2),
                   "peak_rss_mb": round(d["peak_kb"] * 1024 / 1e6, 1),
                   "peak_minus_overhead_mb": round((d["peak_kb"] - d["overhead_kb"]) * 1024 / 1e6, 1)}

    # K checkpoints in one pass vs K single diffs (warm cache: the files were just written/read)
    _raw_read([base, *ckpts])
    many = _diff_child(base, ckpts, work / "diff-k.csv")["seconds"]
    singles = sum(_diff_child(base, [c], work / f"diff-single-{i}.csv")["seconds"] for i, c in enumerate(ckpts))
    res["k_checkpoints"] = {"k": K, "one_diff_s": round(many, 2), "k_single_diffs_s": round(singles, 2),
                            "speedup": round(singles / many, 2)}
    res["spectrum"] = spectrum_bench(Path(out))
    return res


# --------------------------------------------------------------------------- spectrum vs its SVDs

def _bare_svds(ref: Path, target: Path, null_draws: int) -> float:
    """Seconds of torch.linalg.svd (float32, CPU) of every matrix `spectrum` analyses: R, T and, per null
    draw, R + a random update (the SVDs the command cannot avoid)."""
    import torch

    from tunescope.analyse.layout import parts, read_config
    from tunescope.analyse.spectrum import null_seed, null_update
    from tunescope.weights import WeightFiles

    rw, tw, config = WeightFiles(ref), WeightFiles(target), read_config(ref)
    todo = [p for n in rw.names() if len(rw.shape(n)) == 2 for p in parts(n, rw.shape(n), config) if p.param == "weight"]
    total = 0.0
    for p in todo:
        a, b = p.matrix(rw.get(p.tensor)).float(), p.matrix(tw.get(p.tensor)).float()
        mats = [a, b] + [a + null_update(tuple(a.shape), 1e-3, null_seed(p.tensor, d)).float() for d in range(null_draws)]
        t = time.perf_counter()
        for m in mats:
            torch.linalg.svd(m, full_matrices=False)
        total += time.perf_counter() - t
    return total


def _side_by_side(ref: Path, target: Path, work: Path, threads: int) -> dict:
    from tunescope.analyse.spectrum import spectrum

    row: dict = {}
    for draws in (0, 3):
        bare = _bare_svds(ref, target, draws)
        t = time.perf_counter()
        spectrum(ref, target, work / f"spectrum-{draws}.csv", progress=False, threads=threads, device="cpu",
                 null_draws=draws)
        spec = time.perf_counter() - t
        row[f"null_draws_{draws}"] = {"bare_svds_s": round(bare, 2), "spectrum_s": round(spec, 2),
                                      "ratio": round(spec / bare, 2)}
    return row


def _noised_copy(src: Path, dst: Path, rel: float = 1e-3) -> Path:
    """`src` with every tensor plus rel * its RMS * N(0, 1) noise: a fine-tuned target for the organism."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    if dst.is_dir():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    g = torch.Generator().manual_seed(0)
    sd = load_file(src / "model.safetensors")
    noised = {k: v + rel * v.float().pow(2).mean().sqrt() * torch.randn(v.shape, generator=g).to(v.dtype)
              for k, v in sd.items()}
    save_file(noised, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def spectrum_bench(out: Path, threads: int = 1) -> dict:
    """spectrum against the bare SVDs of its matrices, with and without the null model (`threads` CPU threads)."""
    import torch

    from tunescope.organism import build

    torch.set_num_threads(threads)
    work = out / "analyse"
    work.mkdir(parents=True, exist_ok=True)
    base, (ckpt,) = make_llama_pair(out / "synthetic-1b-layer", "1b-layer", dtype=torch.float32)
    organism = Path(build("default"))
    tuned = _noised_copy(organism, out / "organism-noised")
    return {"threads": threads, "load_1min": round(os.getloadavg()[0], 2),
            "1b_layer": _side_by_side(base, ckpt, work, threads),
            "organism": _side_by_side(organism, tuned, work, threads)}


if __name__ == "__main__":
    if sys.argv[1:] == ["spectrum"]:
        print(json.dumps(spectrum_bench(Path("bench_out")), indent=2))
    else:
        print(json.dumps(run(Path("bench_out")), indent=2))
