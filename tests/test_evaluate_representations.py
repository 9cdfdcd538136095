"""Per-layer linear CKA (evaluate/representations.py) against the Gram-matrix form in float64, and the
engine's pooled hidden states against unbatched forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _models import perturb
from scipy.stats import ortho_group
from transformers import AutoModelForCausalLM

from tunescope.evaluate.engine import HFEngine, load_tokenizer, render_prompt
from tunescope.evaluate.representations import anchored, cka_by_layer, linear_cka
from tunescope.world import get_task


def gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC form, as in Jin et al.'s model_dynamics_plot.py: centred Gram matrices H K H, in float64."""
    n = x.shape[0]
    h = np.eye(n) - np.full((n, n), 1.0 / n)
    kx, ky = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum()))


def test_linear_cka_matches_the_gram_form_and_its_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    y = x @ rng.normal(size=(12, 12)) + rng.normal(size=(40, 12))
    assert linear_cka(x, y) == pytest.approx(gram_cka(x, y), rel=1e-12)
    assert 0 < linear_cka(x, y) < 1
    q = ortho_group.rvs(12, random_state=1)
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, rel=1e-12)  # rotation, scale, shift
    assert linear_cka(x, rng.normal(size=(40, 12))) < 0.5  # unrelated representations
    stacked = np.stack([x, y], axis=1)  # (N, 2 layers, H)
    assert cka_by_layer(stacked, stacked[:, ::-1]) == pytest.approx([linear_cka(x, y)] * 2, rel=1e-12)


def test_anchored_prompts_end_where_the_prompts_stop_sharing_their_suffix(smoke_organism):
    assert anchored([[1, 2, 9, 8], [3, 4, 5, 9, 8], [7, 9, 8]]) == [[1, 2], [3, 4, 5], [7]]
    assert anchored([[1, 9], [1, 9]]) == [[1, 9], [1, 9]]  # nothing differs: kept whole
    tok = load_tokenizer(smoke_organism)
    items = get_task("game24").items("test", 8)
    cut = anchored([render_prompt(tok, it.prompt) for it in items])
    tails = {tuple(p[-8:]) for p in cut}
    assert len(tails) == len(items)  # every prompt's pooled tokens differ
    assert tok.decode(cut[0][-8:]).strip() in items[0].prompt  # user text, not the template


def test_pooled_hidden_states_match_unbatched_forward_passes(smoke_organism):
    tok = load_tokenizer(smoke_organism)
    engine = HFEngine(smoke_organism, tok, device="cpu")
    prompts = [render_prompt(tok, it.prompt) for it in get_task("maths").items("test", 3)]
    prompts.append(prompts[0][-5:])  # shorter than the 8 pooled tokens: pooled over the 5 it has
    got = engine.pooled_hidden_states(prompts, k_last=8, batch_size=3)
    model = AutoModelForCausalLM.from_pretrained(str(smoke_organism), dtype=torch.float32).eval()
    assert got.shape == (4, model.config.num_hidden_layers + 1, model.config.hidden_size)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            hs = model(torch.tensor([p]), output_hidden_states=True).hidden_states
        want = np.stack([h[0, -8:].double().numpy().mean(0) for h in hs])  # (layers + 1, H)
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_cka_of_a_checkpoint_to_its_base_is_one_and_falls_with_noise(smoke_organism, tmp_path):
    tok = load_tokenizer(smoke_organism)
    prompts = anchored([render_prompt(tok, it.prompt) for it in get_task("game24").items("test", 16)])
    base = HFEngine(smoke_organism, tok, device="cpu").pooled_hidden_states(prompts)
    noisy = perturb(smoke_organism, tmp_path / "noisy", scale=0.5)
    moved = HFEngine(noisy, tok, device="cpu").pooled_hidden_states(prompts)
    assert cka_by_layer(base, base) == pytest.approx([1.0] * base.shape[1], rel=1e-9)
    drift = 1 - np.asarray(cka_by_layer(base, moved))
    assert drift[-1] > 1e-3 and drift[-1] > drift[0]  # the noise compounds through the layers
