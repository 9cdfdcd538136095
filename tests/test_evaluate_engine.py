"""The HF engine on the smoke organism: batching changes nothing, log-probs and KL match float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from _models import float64_logprobs, perturb
from scipy.special import rel_entr

from tunescope.evaluate.distribution import pooled_kl, reference_logprobs, teacher_forced_kl
from tunescope.evaluate.engine import HFEngine, load_tokenizer, render_prompt
from tunescope.world import SYSTEM_PROMPT, get_task
from tunescope.world.task import format_completion


@pytest.fixture(scope="module")
def tok(smoke_organism):
    return load_tokenizer(smoke_organism)


@pytest.fixture(scope="module")
def engine(smoke_organism, tok):
    return HFEngine(smoke_organism, tok, device="cpu")


@pytest.fixture(scope="module")
def prompts(tok):
    items = get_task("maths").items("test", 2) + get_task("game24").items("test", 2) + \
        get_task("maths_hard").items("test", 2)
    return [render_prompt(tok, it.prompt) for it in items]


def test_prompt_uses_chat_template_with_system_prompt(tok):
    text = tok.decode(render_prompt(tok, "What is 2 + 3?"))
    assert SYSTEM_PROMPT in text and "What is 2 + 3?" in text
    assert text.index(SYSTEM_PROMPT) < text.index("What is 2 + 3?")
    tok2 = load_tokenizer(tok.name_or_path)
    tok2.chat_template = None
    plain = tok2.decode(render_prompt(tok2, "What is 2 + 3?"), skip_special_tokens=True)
    assert plain.startswith(SYSTEM_PROMPT) and plain.rstrip().endswith("What is 2 + 3?")


def test_batched_greedy_equals_one_at_a_time(engine, prompts):
    assert len({len(p) for p in prompts}) > 1  # padding really happens
    batched = engine.generate(prompts, max_new_tokens=16, batch_size=len(prompts))
    single = [engine.generate([p], max_new_tokens=16, batch_size=1)[0] for p in prompts]
    for b, s in zip(batched, single):
        assert len(b) == 1
        assert (b[0].ids, b[0].text, b[0].truncated) == (s[0].ids, s[0].text, s[0].truncated)
        assert b[0].entropy_sum == pytest.approx(s[0].entropy_sum, rel=1e-4, abs=1e-4)


def test_entropy_matches_float64_recomputation(engine, prompts, smoke_organism, tok):
    g = engine.generate(prompts[:1], max_new_tokens=12)[0][0]
    new_ids = list(g.ids)
    assert len(new_ids) == g.n_tokens and tok.decode(new_ids, skip_special_tokens=True) == g.text
    lp = float64_logprobs(smoke_organism, prompts[0] + new_ids)[len(prompts[0]) - 1:]  # (n+1, V)
    steps = g.n_tokens + (not g.truncated)
    ent = -(np.exp(lp[:steps]) * lp[:steps]).sum(-1)
    assert g.entropy_sum == pytest.approx(ent.sum(), rel=1e-4)


def test_sampling_is_seeded_and_gives_n_samples(engine, prompts):
    a = engine.generate(prompts[:2], max_new_tokens=10, temperature=1.0, top_p=0.9, n_samples=3, seed=4)
    b = engine.generate(prompts[:2], max_new_tokens=10, temperature=1.0, top_p=0.9, n_samples=3, seed=4)
    c = engine.generate(prompts[:2], max_new_tokens=10, temperature=1.0, top_p=0.9, n_samples=3, seed=5)
    assert [len(x) for x in a] == [3, 3]
    assert [[g.text for g in x] for x in a] == [[g.text for g in x] for x in b]
    assert [[g.text for g in x] for x in a] != [[g.text for g in x] for x in c]


def test_compact_sampling_draws_what_generate_draws(smoke_organism, tok, engine, prompts):
    """The compact sampler, seeded per batch as `generate` is, gives Hugging Face's own completions."""
    slow = HFEngine(smoke_organism, tok, device="cpu", compact=False)
    assert engine.compact is not None and slow.compact is None
    kw = {"max_new_tokens": 12, "temperature": 1.0, "n_samples": 2, "batch_size": 4, "seed": 3}
    for top_p in (1.0, 0.8):
        fast, hf = engine.generate(prompts, top_p=top_p, **kw), slow.generate(prompts, top_p=top_p, **kw)
        assert [[g.ids for g in x] for x in fast] == [[g.ids for g in x] for x in hf]
        assert [[g.truncated for g in x] for x in fast] == [[g.truncated for g in x] for x in hf]
        for x, y in zip(fast, hf):
            assert [g.entropy_sum for g in x] == pytest.approx([g.entropy_sum for g in y], rel=1e-4, abs=1e-4)
    assert any(not g.truncated for x in fast for g in x) and any(g.truncated for x in fast for g in x)


def test_sequence_loglik_matches_float64_forward(engine, prompts, smoke_organism, tok):
    conts = [tok(t, add_special_tokens=False)["input_ids"] for t in
             ["<answer>12</answer>", "<think>3 + 4 = 7.</think>", "<answer>cards</answer>"]]
    ctxs = [prompts[0], prompts[2], prompts[5]]
    got = engine.sequence_loglik(ctxs, conts, batch_size=3)
    for ctx, cont, value in zip(ctxs, conts, got):
        lp = float64_logprobs(smoke_organism, ctx + cont)
        want = sum(lp[len(ctx) - 1 + t, tid] for t, tid in enumerate(cont))
        assert value == pytest.approx(want, rel=1e-4)


def test_kl_matches_float64_reference(smoke_organism, tok, tmp_path):
    tuned = perturb(smoke_organism, tmp_path / "tuned", scale=0.3)
    ref, ck = HFEngine(smoke_organism, tok, device="cpu"), HFEngine(tuned, tok, device="cpu")
    items = get_task("maths").items("test", 3)
    ctx = [render_prompt(tok, it.prompt) for it in items]
    resp = [tok(format_completion(it.solution, it.answer), add_special_tokens=False)["input_ids"]
            + [tok.eos_token_id] for it in items]
    sums, counts = teacher_forced_kl(ref, ck, ctx, resp, batch_size=2)
    for c, r, s in zip(ctx, resp, sums):
        lp_r = float64_logprobs(smoke_organism, c + r)[len(c) - 1: len(c) - 1 + len(r)]  # (L, V)
        lp_c = float64_logprobs(tuned, c + r)[len(c) - 1: len(c) - 1 + len(r)]
        want = rel_entr(np.exp(lp_r), np.exp(lp_c)).sum()
        assert s == pytest.approx(want, rel=1e-3)
        assert s > 0
    kl, lo, hi = pooled_kl(sums, counts, seed=0, n_resamples=200)
    assert kl == pytest.approx(sum(sums) / sum(counts)) and lo <= kl <= hi
    kept = reference_logprobs(ref, ctx, resp, batch_size=2)  # the reference's side computed once, reused
    assert teacher_forced_kl(ref, ck, ctx, resp, batch_size=2, ref_lp=kept) == (sums, counts)  # bit for bit
    assert reference_logprobs(ref, ctx, resp, max_floats=10) is None  # too large to keep: computed in lockstep
    self_sums, _ = teacher_forced_kl(ref, ref, ctx, resp)
    assert max(abs(x) for x in self_sums) < 1e-6
