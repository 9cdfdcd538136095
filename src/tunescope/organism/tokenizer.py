"""The organism's tokenizer: byte-level BPE trained on the world's text, with a chat template.

Like GPT-2/Llama-3 tokenizers it is byte-level BPE (no unknown tokens), with two deviations that
suit a tiny model: every digit is its own token (as in Llama-1 and PaLM, so that column arithmetic
is learnable), and the answer-format tags `<think> </think> <answer> </answer>` are single tokens.

It is saved as a Hugging Face fast tokenizer, so `AutoTokenizer.from_pretrained(dir)` loads it
and `apply_chat_template` renders chats exactly as for a real chat model:

    <|bos|><|system|>…<|end|><|user|>…<|end|><|assistant|>…<|end|>

`<|end|>` closes every turn and is the eos token, so generation stops at the end of the assistant
turn. The assistant turn, including its `<|end|>`, sits inside `{% generation %}` markers: that is
what TRL's SFTTrainer needs for `assistant_only_loss=True` (`return_assistant_tokens_mask`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|end|>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = [PAD, BOS, EOS, *(f"<|{role}|>" for role in ROLES)]
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]  # ordinary (decoded) added tokens

# GPT-2's pre-tokenizer regex with one change: a number splits into single digits (` ?\p{N}`,
# GPT-2 has ` ?\p{N}+`), each keeping its leading space, so " 45" is "Ġ4" "5".
_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('role must be system, user or assistant, got ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, context: int) -> PreTrainedTokenizerFast:
    """Train byte-level BPE with single-digit tokens on `texts`; return a HF fast tokenizer.

    `vocab_size` counts the special and format tokens; `context` becomes `model_max_length`.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(FORMAT_TOKENS),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(FORMAT_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=context,
        padding_side="left",  # batched generation pads on the left
        clean_up_tokenization_spaces=False,
    )


def render(tokenizer: PreTrainedTokenizerFast, example: dict) -> list[int]:
    """Token ids of one corpus example: a `{"text"}` document or a `{"messages"}` chat.

    Documents are wrapped as `<|bos|>text<|end|>`; chats go through the chat template, so
    pretraining sees exactly the token sequences that SFT, GRPO and evaluation will use.
    """
    if "messages" in example:
        return list(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False))
    ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
