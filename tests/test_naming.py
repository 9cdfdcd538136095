"""One parser for layer ranges (selectors, train_only, reset, spectra) and one rounding rule."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from tunescope.errors import UserError
from tunescope.naming import depth_of, layer_range, parse_selector, resolve_selector, select


def _overlapping(a: Fraction, b: Fraction, n_layers: int) -> list[int]:
    """Independent rule: layer i spans [i, i+1) of [0, L); it is in when that overlaps [a·L, b·L)."""
    return [i for i in range(n_layers) if i < b * n_layers and i + 1 > a * n_layers]


@pytest.mark.parametrize("n_layers", [1, 2, 4, 6, 7, 16, 28, 32, 100])
def test_shares_of_depth_follow_the_overlap_rule(n_layers):
    for a, b in itertools.combinations(range(0, 101, 5), 2):
        want = _overlapping(Fraction(a, 100), Fraction(b, 100), n_layers)
        got = layer_range(f"{a}%-{b}%", n_layers)
        assert list(range(got[0], got[1] + 1)) == want, (a, b, n_layers)
        assert layer_range(f"{a}-{b}%", n_layers) == got  # "0-25%" means "0%-25%"


def test_the_papers_ranges_and_one_rule_for_freeze_and_reset():
    assert layer_range("60%-80%", 32) == (19, 25)  # Rajani et al.'s frozen mid-depth MLPs
    assert layer_range("0%-25%", 32) == (0, 7)  # Jin et al.'s first quarter of layers
    assert layer_range("7%-8%", 100) == (7, 7)  # exact: no float rounding
    assert layer_range("3", 6) == (3, 3) and layer_range("0-5", 6) == (0, 5)


@pytest.mark.parametrize("text, n_layers, message", [
    ("0-99", 2, "outside the model, which has layers 0-1"),
    ("5-3", 8, "is empty"),
    ("80%-60%", 8, "low < high"),
    ("0%-120%", 8, "within 0-100%"),
    ("1.5-3", 8, "integers"),
    ("first-last", 8, "must be a layer (7), a range (19-25) or a share of depth (60%-80%)"),
])
def test_bad_ranges_are_one_line_errors(text, n_layers, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layer_range(text, n_layers)


def test_selectors_take_shares_of_depth_and_refuse_layers_outside_the_model():
    names = [f"model.layers.{i}.{m}.weight" for i in range(6)
             for m in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj")] + ["model.embed_tokens.weight"]
    assert depth_of(names) == 6
    assert select(names, ["q@25%-55%"]) == [f"model.layers.{i}.self_attn.q_proj.weight" for i in (1, 2, 3)]
    assert select(names, ["down@60%-80%"]) == select(names, ["down@3-4"])
    assert resolve_selector("down@60%-80%", 6) == "down@3-4"
    with pytest.raises(UserError, match="selector 'q@0-99'.*outside the model, which has layers 0-5"):
        select(names, ["q@0-99"])
    with pytest.raises(UserError, match="share of depth"):
        parse_selector("q@25%-55%").matches(names[0])  # unresolved: the depth is needed
