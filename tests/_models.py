"""Test helpers shared across test files (not fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax
from transformers import AutoModelForCausalLM


def perturb(src: Path, dst: Path, scale: float, seed: int = 0) -> Path:
    """A copy of a model directory with Gaussian noise added to every weight (a stand-in fine-tune)."""
    shutil.copytree(src, dst)
    if scale:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * p.std() * torch.randn(p.shape, generator=g))
        model.save_pretrained(str(dst))
    return dst


def float64_logprobs(model_dir: Path, ids: list[int]) -> np.ndarray:
    """Unbatched, unpadded forward pass; log-softmax in float64. (S, V)"""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
    return log_softmax(logits, axis=-1)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_model(d: Path, family: str, tokenizer_from: Path, seed: int = 0) -> Path:
    """A tiny random model of a real family, 2 layers, with `tokenizer_from`'s tokenizer (the organism's):
    olmo2 (OLMo-2: untied head, QK-norm), qwen2 (Qwen-2.5: q/k/v biases, untied here, a ChatML chat
    template) or llama3 (Llama-3: untied head, grouped-query attention, llama3 rope scaling)."""
    import json

    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Olmo2Config,
        Olmo2ForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    conf = json.loads((tokenizer_from / "config.json").read_text())
    common = dict(vocab_size=conf["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, tie_word_embeddings=False,
                  pad_token_id=conf.get("pad_token_id"), bos_token_id=conf.get("bos_token_id"),
                  eos_token_id=conf.get("eos_token_id"))
    torch.manual_seed(seed)
    if family == "olmo2":
        model = Olmo2ForCausalLM(Olmo2Config(num_key_value_heads=4, **common))
    elif family == "qwen2":  # its tokenizer class adds <|endoftext|>; rows padded past the tokenizer, as Qwen's are
        model = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **{**common, "vocab_size": conf["vocab_size"] + 64}))
    elif family == "llama3":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 256}, **common))
    else:
        raise ValueError(family)
    model.save_pretrained(str(d))
    for f in tokenizer_from.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, d / f.name)
    if family == "qwen2":  # another chat template than the organism's
        (d / "chat_template.jinja").write_text(CHATML)
    return d


def lm_eval_tiny_qa(tasks: Path, data: Path) -> Path:
    """A directory holding `tiny_qa`, an lm-evaluation-harness multiple-choice task over `data` (a local
    JSON file of question, choices, label), for lm-eval runs without the hub."""
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "tiny_qa.yaml").write_text(f"""task: tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return tasks
