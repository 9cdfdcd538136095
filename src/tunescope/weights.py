"""Stream safetensors weights one tensor at a time (single file or sharded with an index).

Nothing here loads a whole model: `WeightFiles.get(name)` reads one tensor, and `ShardWriter`
writes tensors into size-capped shards plus a `model.safetensors.index.json`, as
`save_pretrained` does, so that `AutoModelForCausalLM.from_pretrained` reads the result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tunescope.errors import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


_TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                 "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                 "U8": torch.uint8, "BOOL": torch.bool}


def _data_offsets(f: Path) -> dict[str, tuple[int, int]]:
    """name -> (absolute first byte, end byte) of every tensor in a safetensors file."""
    with open(f, "rb") as h:
        n = int.from_bytes(h.read(8), "little")
        header = json.loads(h.read(n))
    return {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
            for k, v in header.items() if k != "__metadata__"}


def verify(model_dir: str | Path) -> None:
    """A local model directory is whole before any work reads it: config.json parses, and every
    safetensors file's header parses and covers the file exactly (a truncated copy fails here with one
    line naming the file, not later inside the Rust reader)."""
    d = Path(model_dir)
    conf = d / "config.json"
    if not conf.is_file():
        raise UserError(f"{d} has no config.json; pass a Hugging Face model directory")
    try:
        json.loads(conf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{conf} is not valid JSON ({e}); re-copy or re-save the model") from None
    for f in sorted(d.glob("*.safetensors")):
        _verify_file(f)


def _verify_file(f: Path) -> None:
    size = f.stat().st_size
    fix = "the file is truncated or corrupt; re-copy or re-save the model"
    with open(f, "rb") as h:
        head = h.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise UserError(f"{f}: no readable safetensors header ({size} bytes); {fix}")
        try:
            header = json.loads(h.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
            raise UserError(f"{f}: its safetensors header does not parse; {fix}") from None
    if 8 + n + end != size:
        raise UserError(f"{f}: {size:,} bytes where its header describes {8 + n + end:,}; {fix}")


class WeightFiles:
    """Read-only view of a model directory's safetensors tensors, by name."""

    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)
        if not self.dir.is_dir():
            raise UserError(f"{self.dir} is not a directory; pass a model directory")
        for f in sorted(self.dir.glob("*.safetensors")):
            _verify_file(f)
        index = self.dir / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError):
                raise UserError(f"{index} is not a valid safetensors index; re-save the model") from None
            self.file_of = {k: self.dir / v for k, v in weight_map.items()}
        else:
            files = sorted(self.dir.glob("*.safetensors"))
            if not files:
                raise UserError(f"{self.dir} has no *.safetensors weights; save the model with safetensors")
            self.file_of = {}
            for f in files:
                with safe_open(f, framework="pt") as h:
                    for k in h.keys():
                        self.file_of[k] = f
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}
        self._offsets: dict[Path, dict[str, tuple[int, int]]] = {}
        for f in sorted(set(self.file_of.values())):
            if not f.is_file():
                raise UserError(f"shard {f.name} named in {INDEX} is missing from {self.dir}")
            with safe_open(f, framework="pt") as h:
                for k in h.keys():
                    sl = h.get_slice(k)
                    self._meta[k] = (tuple(sl.get_shape()), sl.get_dtype())
        for k, f in self.file_of.items():
            if k not in self._meta:
                raise UserError(f"tensor {k} is listed in {INDEX} of {self.dir} but missing from {f.name}; "
                                "re-save the model")

    def names(self) -> list[str]:
        """Tensor names in file order (stable across identical architectures)."""
        return list(self.file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][0]

    def dtype(self, name: str) -> str:
        """The stored dtype as safetensors names it ('BF16', 'F32', ...)."""
        return self._meta[name][1]

    def nbytes(self, name: str) -> int:
        bits = {"F64": 64, "F32": 32, "BF16": 16, "F16": 16, "I64": 64, "I32": 32, "I8": 8, "U8": 8, "BOOL": 8}
        return math.prod(self.shape(name)) * bits.get(self.dtype(name), 32) // 8

    def __contains__(self, name: str) -> bool:
        return name in self.file_of

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, optionally cast (cast is exact from bf16/fp16 to float32)."""
        if name not in self.file_of:
            raise UserError(f"tensor {name} is missing from {self.dir}")
        with safe_open(self.file_of[name], framework="pt") as h:
            t = h.get_tensor(name)
        return t.to(dtype) if dtype is not None else t

    def rows(self, name: str, start: int, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows start:stop of a tensor (first dimension), read without loading the rest of it.

        Plain positioned reads (no memory map), so the process holds only the rows asked for and
        other threads run during the read. A 0-d tensor is returned whole as shape (1,).
        """
        if name not in self.file_of:
            raise UserError(f"tensor {name} is missing from {self.dir}")
        f = self.file_of[name]
        if f not in self._offsets:
            self._offsets[f] = _data_offsets(f)
        first, _ = self._offsets[f][name]
        shape = self.shape(name) or (1,)
        stored = _TORCH_DTYPES[self.dtype(name)]
        row = math.prod(shape[1:]) * torch.empty((), dtype=stored).element_size()
        buf = torch.empty((stop - start) * row, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        with open(f, "rb", buffering=0) as h:
            h.seek(first + start * row)
            got = 0
            while got < len(view):
                n = h.readinto(view[got:])
                if not n:
                    raise UserError(f"{f} is truncated (tensor {name}); re-save the model")
                got += n
        t = buf.view(stored).reshape(stop - start, *shape[1:])
        return t.to(dtype) if dtype is not None else t

    def iter(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs, reading each shard file once, in order."""
        by_file: dict[Path, list[str]] = {}
        for k, f in self.file_of.items():
            by_file.setdefault(f, []).append(k)
        for f, keys in by_file.items():
            with safe_open(f, framework="pt") as h:
                for k in keys:
                    t = h.get_tensor(k)
                    yield k, (t.to(dtype) if dtype is not None else t)


class ShardWriter:
    """Write tensors into shards of at most `max_shard_bytes`, then an index (or one file)."""

    def __init__(self, out_dir: str | Path, max_shard_bytes: int = 2 * 1024**3):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max = max_shard_bytes
        self._buf: dict[str, torch.Tensor] = {}
        self._buf_bytes = 0
        self._shards: list[list[str]] = []
        self._total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._buf and self._buf_bytes + size > self.max:
            self._flush()
        self._buf[name] = tensor.contiguous()
        self._buf_bytes += size
        self._total += size

    def _flush(self) -> None:
        idx = len(self._shards)
        save_file(self._buf, str(self.dir / f"shard-{idx:05d}.safetensors"), metadata={"format": "pt"})
        self._shards.append(list(self._buf))
        self._buf, self._buf_bytes = {}, 0

    def close(self) -> None:
        """Finish: a single `model.safetensors` when one shard suffices, else shards + index."""
        if self._buf:
            self._flush()
        n = len(self._shards)
        if n == 1:
            (self.dir / "shard-00000.safetensors").rename(self.dir / SINGLE)
            return
        weight_map = {}
        for i, names in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            (self.dir / f"shard-{i:05d}.safetensors").rename(self.dir / final)
            weight_map.update({k: final for k in names})
        (self.dir / INDEX).write_text(json.dumps({"metadata": {"total_size": self._total},
                                                  "weight_map": weight_map}, indent=2))
