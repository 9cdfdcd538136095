"""The model organism: a tiny Llama with its own tokenizer, pretrained from scratch on the synthetic world.

    from tunescope.organism import build
    model_dir = build("default")   # cached; load with AutoModelForCausalLM / AutoTokenizer

Modules, in pipeline order: `tokenizer` (BPE + chat template), `model` (size presets),
`pretrain` (packing + HF Trainer), `build` (recipe, cache, sidecar), `cli`.
"""

from tunescope.organism.build import PRESETS, Recipe, build, describe, verify

__all__ = ["PRESETS", "Recipe", "build", "describe", "verify"]
