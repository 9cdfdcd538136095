"""Model sizes for the organism: named builder functions returning a Hugging Face `LlamaConfig`.

The organism is a plain Llama (RMSNorm, RoPE, SwiGLU MLP, grouped-query attention), so every
downstream stage (TRL trainers, weight diffs by layer and matrix type, SVD surgery) treats it
exactly like Llama-3 or OLMo-2. Deviations from a real Llama are only of scale: tiny width, a
small vocabulary and tied input/output embeddings (as in Llama-3.2-1B) to keep parameters in the
transformer blocks, where the analysis looks.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import LlamaConfig

from tunescope.organism.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS


def _llama(vocab_size: int, *, hidden: int, mlp: int, layers: int, heads: int, kv_heads: int,
           context: int) -> LlamaConfig:
    """A LlamaConfig with every knob that matters written out (library defaults change)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=mlp,  # SwiGLU width; ~2.7x hidden as in Llama
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,  # < heads: grouped-query attention
        head_dim=hidden // heads,
        max_position_embeddings=context,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=0.02,
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        tie_word_embeddings=True,  # saves vocab x hidden parameters
        use_cache=True,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
        dtype="float32",
    )


def smoke(vocab_size: int) -> LlamaConfig:
    """~0.1M parameters, 2 layers: builds in seconds; for tests and the smoke study."""
    return _llama(vocab_size, hidden=64, mlp=176, layers=2, heads=4, kv_heads=2, context=256)


def default(vocab_size: int) -> LlamaConfig:
    """~1.4M parameters, 6 layers: enough depth for layer-wise analysis, trains in minutes on CPU.

    Narrow on purpose: at a fixed CPU budget a narrower model sees more tokens and takes more
    optimiser steps, and copying from the prompt (which every task needs) emerges with steps.
    """
    return _llama(vocab_size, hidden=128, mlp=352, layers=6, heads=4, kv_heads=2, context=384)


MODELS: dict[str, Callable[[int], LlamaConfig]] = {"smoke": smoke, "default": default}
