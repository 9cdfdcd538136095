"""GRPO rollouts with the compact decoder: the policy's `generate` for TRL, on CPU.

TRL's `GRPOTrainer` samples each step's completions with `model.generate(input_ids, attention_mask,
generation_config=...)`. For the organism on CPU most of that time is Python around a tiny network
(see `tunescope.evaluate.compact`). `use_compact_rollouts(model)` gives the policy an instance-level
`generate` that draws the same completions from the same distribution with the compact decoder —
temperature, top-k and top-p as Hugging Face applies them, the global torch RNG (so a seed and a
resumed run's restored RNG state decide the draws, as before) — and returns what `generate` returns:
the prompt ids followed by the completion, its end-of-sequence token, and padding.

It steps aside (calls the class's `generate`) for anything it does not compute exactly as Hugging
Face does: not a plain Llama on CPU, a logit-changing generation setting, greedy decoding.
"""

from __future__ import annotations

from typing import Any

import torch

from tunescope.evaluate import compact as cmp

# GenerationConfig fields that change the sampling distribution: the greedy decoder's, and the warpers
# and search settings the sampler does not apply, with the values that leave them alone
_OFF = {**cmp.NEUTRAL, "min_p": (None, 0.0), "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0),
        "eta_cutoff": (None, 0.0), "num_beams": (None, 1), "num_return_sequences": (None, 1)}


def supported(model: torch.nn.Module, gen: Any) -> bool:
    """Whether the compact sampler draws exactly what `model.generate(generation_config=gen)` would."""
    return (cmp.supports(model) and bool(getattr(gen, "do_sample", False)) and (gen.temperature or 1.0) > 0
            and cmp.neutral(gen, _OFF))


def use_compact_rollouts(model: torch.nn.Module) -> None:
    """Give `model` a `generate` that samples with the compact decoder when `supported`."""
    hf_generate = model.generate  # the bound class method

    def generate(input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 generation_config: Any = None, **kw: Any) -> torch.Tensor:
        gen = generation_config if generation_config is not None else model.generation_config
        if input_ids is None or kw.keys() - {"disable_compile"} or not supported(model, gen):
            return hf_generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen, **kw)
        return sample_like_generate(model, input_ids, attention_mask, gen)

    model.generate = generate


def sample_like_generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         gen: Any, compact_at: float = cmp.COMPACT_AT) -> torch.Tensor:
    """(B, P + T) like `generate`: left-padded prompts, then each completion (its end-of-sequence
    token included when it stopped) padded with `pad_token_id` to the longest one."""
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    pad = gen.pad_token_id if gen.pad_token_id is not None else eos[0]
    mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    prompts = [row[m].tolist() for row, m in zip(input_ids, mask)]
    was_training = model.training
    model.eval()
    try:
        net = cmp.CompactLlama(model)  # rebuilt per call: the policy's weights change every step
        outs = net.sample(prompts, gen.max_new_tokens, set(eos), pad, temperature=gen.temperature or 1.0,
                          top_p=1.0 if gen.top_p is None else gen.top_p, top_k=gen.top_k or 0, compact_at=compact_at)
    finally:
        model.train(was_training)
    completions = [ids for ids, _, _ in outs]  # the end-of-sequence token included where one stopped it
    width = max(len(c) for c in completions)
    body = torch.full((len(completions), width), pad, dtype=input_ids.dtype)
    for r, c in enumerate(completions):
        body[r, :len(c)] = torch.tensor(c, dtype=input_ids.dtype)
    return torch.cat([input_ids, body.to(input_ids.device)], 1)
