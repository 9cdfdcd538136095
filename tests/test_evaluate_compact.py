"""The compact greedy decoder against Hugging Face: the same logits (prefill and cached decoding, left
padding, grouped-query and plain attention, tied and untied heads) and the same greedy completions."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tunescope.evaluate.compact import SHARED_PREFIX_MIN, CompactLlama, _common_prefix, supports
from tunescope.evaluate.engine import HFEngine, load_tokenizer, render_prompt
from tunescope.organism.build import shipped_dir
from tunescope.world import get_task


def _llama(**kw) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=kw.pop("kv", 2), max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, **kw)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random norms, so that a wrong norm cannot pass
        for n, p in m.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return m


def _hf_last_logits(m: LlamaForCausalLM, rows: list[list[int]]) -> torch.Tensor:
    """Each row on its own, unpadded, uncached: the logits of its last position. (B, V)"""
    with torch.no_grad():
        return torch.stack([m(torch.tensor([r])).logits[0, -1] for r in rows])


@pytest.mark.parametrize("kw", [{}, {"kv": 4, "tie_word_embeddings": False}, {"head_dim": 16}],
                         ids=["gqa-tied", "mha-untied", "head-dim"])
def test_prefill_and_cached_steps_match_the_hf_forward(kw):
    m = _llama(**kw)
    assert supports(m)
    c = CompactLlama(m)
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (5, 9, 2, 7)]
    width, new = max(map(len, rows)), 4
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    keys = torch.zeros(len(rows), width + new, dtype=torch.bool)
    for i, r in enumerate(rows):
        keys[i, width - len(r):] = True
    pos = (keys[:, :width].long().cumsum(-1) - 1).clamp(min=0)
    shape = (len(c.layers), len(rows), c.k, width + new, c.d)
    cache = (torch.zeros(shape), torch.zeros(shape))
    with torch.inference_mode():
        logits = c.forward(ids, pos, cache, 0, keys)
        torch.testing.assert_close(logits, _hf_last_logits(m, rows), rtol=1e-5, atol=1e-5)
        nxt = pos[:, -1] + 1
        for t in range(new):  # feed fixed tokens through the cache: each step is the full sequence's last logits
            tok = torch.randint(3, 97, (len(rows),), generator=g)
            rows = [r + [int(x)] for r, x in zip(rows, tok)]
            logits = c.forward(tok[:, None], nxt[:, None], cache, width + t, keys)
            nxt = nxt + 1
            torch.testing.assert_close(logits, _hf_last_logits(m, rows), rtol=1e-5, atol=1e-5)


def test_a_shared_prompt_start_runs_once_and_changes_no_logit():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert _common_prefix([[1, 2], [1, 2, 3]]) == 1  # the shortest keeps a token of its own
    assert _common_prefix([[7, 8, 9]]) == 2 and _common_prefix([[1, 2], [3, 4]]) == 0
    m = _llama()
    c = CompactLlama(m)
    g = torch.Generator().manual_seed(2)
    start = torch.randint(3, 97, (SHARED_PREFIX_MIN + 3,), generator=g).tolist()
    rows = [start + torch.randint(3, 97, (n,), generator=g).tolist() for n in (1, 6, 3, 9)]
    with torch.inference_mode():
        logits, cache, keys, last, width = c._prefill(rows, 3, pad=0)
        torch.testing.assert_close(logits, _hf_last_logits(m, rows), rtol=1e-5, atol=1e-5)
        assert width == max(map(len, rows)) and keys[:, :len(start)].all()  # one layout: [start | pad | own]
        assert (~keys[0, len(start):width - 1]).all() and last.tolist() == [len(r) - 1 for r in rows]
        for t in range(3):  # decoding steps after it read the copied start from every row's cache
            tok = torch.randint(3, 97, (len(rows),), generator=g)
            rows = [r + [int(x)] for r, x in zip(rows, tok)]
            logits = c.forward(tok[:, None], (last + 1 + t)[:, None], cache, width + t, keys)
            torch.testing.assert_close(logits, _hf_last_logits(m, rows), rtol=1e-5, atol=1e-5)
        ll = c.sequence_loglik([r[:-2] for r in rows], [r[-2:] for r in rows], batch_size=4, pad=0)
    with torch.no_grad():
        ref = [float(m(torch.tensor([r])).logits[0, -3:-1].log_softmax(-1)[[0, 1], r[-2:]].sum()) for r in rows]
    assert ll == pytest.approx(ref, abs=1e-4)


def test_only_plain_llama_on_cpu_is_supported(smoke_organism):
    tok = load_tokenizer(smoke_organism)
    assert HFEngine(smoke_organism, tok, device="cpu").compact is not None
    assert HFEngine(smoke_organism, tok, device="cpu", compact=False).compact is None
    assert not supports(_llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))
    assert not supports(_llama(attention_bias=True)) and not supports(_llama(hidden_act="gelu"))
    m = _llama()
    m.generation_config.repetition_penalty = 1.2
    assert not supports(m)
    assert not supports(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)))


def _first_gap(engine: HFEngine, prompt: list[int], ids_a: tuple[int, ...], ids_b: tuple[int, ...]) -> float:
    """At the first step where two greedy completions part, the HF margin between their two tokens."""
    t = next(i for i, (x, y) in enumerate(zip(ids_a + (-1,), ids_b + (-2,))) if x != y)
    with torch.no_grad():
        logits = engine.model(torch.tensor([prompt + list(ids_a[:t])])).logits[0, -1]
    top = logits.topk(2).values
    return float(top[0] - top[1])


def test_greedy_completions_equal_hf_generate():
    path = shipped_dir("default")  # trained enough to end its answers (the smoke organism rarely does)
    tok = load_tokenizer(path)
    fast, slow = HFEngine(path, tok, device="cpu"), HFEngine(path, tok, device="cpu", compact=False)
    items = [it for s in ("maths", "game24", "instruct", "maths_hard") for it in get_task(s).items("test", 6)]
    prompts = [render_prompt(tok, it.prompt) for it in items]
    assert len({len(p) for p in prompts}) > 3  # batches are padded
    for max_new in (6, 48):  # short: most rows truncated; long: most end on their own
        a = fast.generate(prompts, max_new_tokens=max_new, batch_size=5)
        b = slow.generate(prompts, max_new_tokens=max_new, batch_size=5)
        assert any(g[0].truncated for g in b) if max_new == 6 else any(not g[0].truncated for g in b)
        for p, (x,), (y,) in zip(prompts, a, b):
            if x.ids != y.ids:  # only a float32 near-tie may part them
                assert _first_gap(slow, p, x.ids, y.ids) < 1e-4, (x.text, y.text)
                continue
            assert (x.text, x.n_tokens, x.truncated) == (y.text, y.n_tokens, y.truncated)
            assert x.entropy_sum == pytest.approx(y.entropy_sum, rel=1e-4, abs=1e-4)


def test_option_logliks_equal_hf_with_each_context_run_once():
    """Multiple-choice options share their item's context: the compact path runs it once per item and
    must give HF's per-pair sums (the options of facts and two-hop items, and uneven lengths)."""
    from tunescope.evaluate.prepare import prepare
    from tunescope.evaluate.run import EvalConfig

    path = shipped_dir("default")
    tok = load_tokenizer(path)
    fast, slow = HFEngine(path, tok, device="cpu"), HFEngine(path, tok, device="cpu", compact=False)
    for suite in ("facts", "twohop"):
        s = prepare(suite, get_task(suite), tok, EvalConfig(n=6), render_prompt)
        assert len({tuple(c) for c in s.contexts}) == 6 < len(s.contexts)  # options share contexts
        assert len({len(o) for o in s.options}) > 1
        got = fast.sequence_loglik(s.contexts, s.options, batch_size=4)
        want = slow.sequence_loglik(s.contexts, s.options, batch_size=4)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-4)
    one = [[5, 6, 7]]
    assert fast.sequence_loglik(one * 2, [[8], [8, 9, 10]], 2) == pytest.approx(
        slow.sequence_loglik(one * 2, [[8], [8, 9, 10]], 2), rel=1e-5, abs=1e-4)
