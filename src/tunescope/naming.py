"""Map tensor names to (layer, module type), and select tensors by module and layer range.

Module types are the study's seven: q, k, v, o (attention) and gate, up, down (MLP), plus
`embed`, `lm_head`, `norm` and `other` for everything kept out of the module means.
`tunescope.analyse` extends this for fused layouts (GPT-2 c_attn, Phi-3 qkv_proj) that are split
into parts.

A selector string, used by freezing, `train_only`, weight surgery and the spectra:

    "gate,up,down@19-25"     gate/up/down projections in layers 19..25 (inclusive)
    "gate,up,down@60%-80%"   the same as a share of depth: 19-25 of 32 layers, 3-4 of 6
    "q,k"                    q and k projections in every layer
    "*@0-7"                  every tensor of layers 0..7

Layer ranges (`layer_range`, the one parser for selectors, reset ranges and the study) are a
layer "7", an inclusive range "0-7", or a share of depth "60%-80%" (also "0-25%"). The rounding
rule: layer i of L spans [i, i+1) of the depth [0, L), and is in a%-b% when that span overlaps
[a·L, b·L), so the range is floor(a·L) .. ceil(b·L) − 1, computed exactly (60%-80% of 32 layers
is 19-25, as in Rajani et al.; 0%-25% of 6 is 0-1). A range of layers outside the model is an error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from tunescope.errors import UserError

MODULES = ("q", "k", "v", "o", "gate", "up", "down")

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_SUFFIX = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
    "w1": "gate", "w3": "up", "w2": "down",
    "qkv_proj": "qkv", "gate_up_proj": "gate_up", "c_attn": "qkv", "c_fc": "up",
    "dense": "o", "fc1": "up", "fc2": "down",
}


@dataclass(frozen=True)
class TensorName:
    name: str
    layer: int | None
    module: str  # one of MODULES, a fused "qkv"/"gate_up", or "embed"/"lm_head"/"norm"/"other"


def parse(name: str) -> TensorName:
    """(layer, module type) of a parameter or safetensors tensor name."""
    m = _LAYER_RE.search(name)
    layer = int(m.group(1)) if m else None
    parts = name.split(".")
    stem = parts[-2] if len(parts) >= 2 and parts[-1] in ("weight", "bias") else parts[-1]
    if "norm" in stem or stem.startswith("ln_"):
        module = "norm"
    elif "embed" in name or stem in ("wte", "wpe"):
        module = "embed"
    elif "lm_head" in name:
        module = "lm_head"
    elif stem == "c_proj" and layer is not None:
        module = "o" if ".attn." in name else "down"
    else:
        module = _SUFFIX.get(stem, "other")
    return TensorName(name=name, layer=layer, module=module)


_RANGE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*(?:-\s*(\d+(?:\.\d+)?)\s*(%?)\s*)?")
RANGE_HELP = "a layer (7), a range (19-25) or a share of depth (60%-80%)"


@dataclass(frozen=True)
class LayerRange:
    """A parsed layer range: absolute inclusive layers, or a share [lo, hi) of the depth."""

    lo: int | Fraction
    hi: int | Fraction
    share: bool  # True: lo, hi are fractions of depth
    text: str = ""  # as written

    def resolve(self, n_layers: int) -> tuple[int, int]:
        """Inclusive layer indices of a `n_layers`-layer model (the module docstring's rule)."""
        where = f"layer range '{self.text.strip() or f'{self.lo}-{self.hi}'}'"
        if self.share:  # lo < hi, so the overlap rule always keeps at least one layer
            return math.floor(self.lo * n_layers), math.ceil(self.hi * n_layers) - 1
        if self.hi >= n_layers:
            raise UserError(f"{where} is outside the model, which has layers 0-{n_layers - 1}")
        return int(self.lo), int(self.hi)


def parse_layer_range(text: str) -> LayerRange:
    """Parse "7", "19-25", "60%-80%" or "0-25%" (see the module docstring); syntax only."""
    m = _RANGE_RE.fullmatch(text)
    if not m:
        raise UserError(f"layer range '{text}' must be {RANGE_HELP}")
    a, a_pct, b, b_pct = m.group(1), m.group(2), m.group(3) or m.group(1), m.group(4) or m.group(2)
    if a_pct or b_pct:
        lo, hi = Fraction(a) / 100, Fraction(b) / 100  # exact: 7% of 100 layers is 7, not 7.000001
        if not 0 <= lo < hi <= 1:
            raise UserError(f"layer range '{text}' must be low%-high% with low < high, within 0-100%")
        return LayerRange(lo, hi, share=True, text=text)
    if "." in a or "." in b:
        raise UserError(f"layer range '{text}': layer indices are integers (or write a share of depth, 0%-25%)")
    if int(b) < int(a):
        raise UserError(f"layer range '{text}' is empty; write it low-high")
    return LayerRange(int(a), int(b), share=False, text=text)


def layer_range(text: str, n_layers: int) -> tuple[int, int]:
    """Inclusive (first, last) layers of `text` in a `n_layers`-layer model."""
    return parse_layer_range(text).resolve(n_layers)


def depth_of(names: list[str]) -> int:
    """Number of transformer blocks that tensor names cover (highest layer index + 1; 0 if none)."""
    layers = [t.layer for t in map(parse, names) if t.layer is not None]
    return max(layers) + 1 if layers else 0


@dataclass(frozen=True)
class Selector:
    """Module types and a layer range; `None` means all. `resolve` turns a share of depth into layers."""

    modules: frozenset[str] | None
    range: LayerRange | None
    text: str = ""

    @property
    def layers(self) -> tuple[int, int] | None:
        if self.range is None:
            return None
        if self.range.share:
            raise UserError(f"selector '{self.text}' gives layers as a share of depth; resolve it at the model's depth")
        return int(self.range.lo), int(self.range.hi)

    def resolve(self, n_layers: int) -> Selector:
        """The selector with its layer range made absolute, checked against a `n_layers`-layer model."""
        if self.range is None:
            return self
        try:
            lo, hi = self.range.resolve(n_layers)
        except UserError as e:
            raise UserError(f"selector '{self.text}': {e}") from None
        return Selector(self.modules, LayerRange(lo, hi, share=False, text=f"{lo}-{hi}"), self.text)

    def matches(self, name: str) -> bool:
        t = parse(name)
        if self.modules is not None and t.module not in self.modules:
            return False
        layers = self.layers
        if layers is not None and (t.layer is None or not layers[0] <= t.layer <= layers[1]):
            return False
        return True


def parse_selector(text: str) -> Selector:
    """Parse "gate,up,down@19-25" or "gate,up,down@60%-80%" style selectors (see module docstring)."""
    mods, _, rng = text.strip().partition("@")
    modules = None
    if mods.strip() not in ("", "*"):
        modules = frozenset(m.strip() for m in mods.split(",") if m.strip())
        known = set(MODULES) | {"qkv", "gate_up", "embed", "lm_head", "norm"}
        bad = sorted(modules - known)
        if bad:
            raise UserError(f"selector '{text}': unknown module type {bad[0]!r}; use {', '.join(MODULES)}")
    layers = None
    if rng.strip():
        try:
            layers = parse_layer_range(rng)
        except UserError as e:
            raise UserError(f"selector '{text}': {e}") from None
    return Selector(modules=modules, range=layers, text=text.strip())


def resolve_selector(text: str, n_layers: int) -> str:
    """A selector string with its layer range made absolute: "q@60%-80%" -> "q@19-25" for 32 layers."""
    sel = parse_selector(text).resolve(n_layers)
    if sel.range is None:
        return text.strip()
    mods = text.strip().partition("@")[0]
    lo, hi = sel.layers  # type: ignore[misc]
    return f"{mods}@{lo}-{hi}"


def select(names: list[str], selectors: list[str]) -> list[str]:
    """Names matched by any selector; a selector that matches nothing, or whose layers lie outside
    the model (its depth taken from `names`), is an error."""
    chosen: set[str] = set()
    depth = depth_of(names)
    for text in selectors:
        sel = parse_selector(text)
        if sel.range is not None and depth:
            sel = sel.resolve(depth)
        hit = [n for n in names if sel.matches(n)]
        if not hit:
            raise UserError(f"selector '{text}' matches no tensor of this model; check module names and layers")
        chosen.update(hit)
    return [n for n in names if n in chosen]
