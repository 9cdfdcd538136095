"""GRPO rollouts with the compact decoder: Hugging Face's sampling warpers, the same draws as
`generate(do_sample=True)` from the same seed, the shape TRL expects, and the fallback."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tunescope.evaluate.compact import warp
from tunescope.train.rollout import sample_like_generate, supported, use_compact_rollouts


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():  # make the end-of-sequence token likely, so that rows stop at different steps
        m.lm_head.weight[2] *= 8
    return m


def _batch(m: LlamaForCausalLM) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (6, 3, 9, 5)]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    return ids, (ids != 0).long()


@pytest.mark.parametrize("t,p,k", [(1.0, 1.0, 0), (0.6, 1.0, 0), (0.7, 0.9, 0), (1.3, 0.8, 5), (0.5, 1.0, 7)])
def test_warp_is_hugging_faces_warpers_in_their_order(t, p, k):
    logits = torch.randn(6, 97, generator=torch.Generator().manual_seed(0)) * 3
    want = logits.clone()
    for w in ([TemperatureLogitsWarper(t)] if t != 1.0 else []) + ([TopKLogitsWarper(k)] if k else []) + \
             ([TopPLogitsWarper(p)] if p < 1.0 else []):
        want = w(None, want)
    assert torch.equal(warp(logits, t, p, k), want)


@pytest.mark.parametrize("t,p", [(0.6, 1.0), (1.0, 0.9)])
def test_seeded_draws_equal_generates(t, p):
    """Rows kept to the end (compact_at=0) consume the RNG as `generate` does: the same tokens."""
    m = _llama()
    ids, mask = _batch(m)
    gen = GenerationConfig(do_sample=True, temperature=t, top_p=p, top_k=0, max_new_tokens=24,
                           pad_token_id=0, eos_token_id=[2])
    assert supported(m, gen)
    torch.manual_seed(11)
    want = m.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    torch.manual_seed(11)
    got = sample_like_generate(m, ids, mask, gen, compact_at=0.0)
    assert got.shape == want.shape and torch.equal(got, want)
    assert (got[:, ids.shape[1]:] == 2).any(1).sum() >= 2  # some rows stopped early, padded after it


def test_policy_generate_is_replaced_only_where_it_is_exact():
    m = _llama()
    ids, mask = _batch(m)
    use_compact_rollouts(m)
    gen = GenerationConfig(do_sample=True, temperature=0.6, top_k=0, max_new_tokens=8, pad_token_id=0, eos_token_id=[2])
    torch.manual_seed(5)
    out = m.generate(input_ids=ids, attention_mask=mask, generation_config=gen, disable_compile=True)
    assert torch.equal(out[:, :ids.shape[1]], ids) and out.shape[1] <= ids.shape[1] + 8
    torch.manual_seed(5)  # the compact sampler drew them (its own row dropping, not generate's draws)
    assert torch.equal(out, sample_like_generate(m, ids, mask, gen))
    # a repetition penalty changes the logits: the class's generate runs, and draws what it draws
    rep = GenerationConfig(do_sample=True, temperature=0.6, top_k=0, max_new_tokens=8, pad_token_id=0,
                           eos_token_id=[2], repetition_penalty=1.3)
    assert not supported(m, rep)
    torch.manual_seed(5)
    a = m.generate(input_ids=ids, attention_mask=mask, generation_config=rep)
    torch.manual_seed(5)
    b = LlamaForCausalLM.generate(m, input_ids=ids, attention_mask=mask, generation_config=rep)
    assert torch.equal(a, b)
