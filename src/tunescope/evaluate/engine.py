"""Hugging Face inference engine: batched generation and teacher-forced log-likelihoods.

Generation follows the standard recipe for decoder-only models: prompts are rendered with the
model's chat template (system = `SYSTEM_PROMPT`, user = the item's prompt, generation prompt
appended), left-padded so that every row's last prompt token sits at the same position, and
decoded with the KV cache. Prompts are sorted by length before batching, so a batch holds
prompts of similar length and wastes little compute on padding; results come back in input order.
Greedy decoding of a batch gives the same tokens as one prompt at a time (tested), because the
attention mask and the position ids from it make the padding invisible.

Alongside each completion the engine records its token count, whether it hit `max_new_tokens`
without an end-of-sequence token (truncated), and the sum of the per-step entropies of the model's
*raw* next-token distribution (before temperature and top-p), read by a logits processor.

Log-likelihoods (multiple-choice options, KL) are teacher-forced: prompt ids and continuation ids
are tokenised separately and concatenated, so the continuation's tokens are the same for every
prompt, and only the continuation's positions are scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, PreTrainedTokenizerBase

from tunescope.errors import UserError
from tunescope.world.task import SYSTEM_PROMPT


@dataclass(frozen=True)
class Generation:
    """One sampled completion."""

    text: str
    n_tokens: int  # generated tokens, end-of-sequence excluded
    truncated: bool  # stopped by max_new_tokens, not by end-of-sequence
    entropy_sum: float  # sum over generated tokens of H(p(. | prefix)) in nats, raw distribution
    ids: tuple[int, ...] = ()  # generated token ids, end-of-sequence excluded


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a model directory, set up for batched generation (left padding, a pad token)."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}") from None
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def render_prompt(tok: PreTrainedTokenizerBase, user: str, system: str = SYSTEM_PROMPT) -> list[int]:
    """Token ids of the prompt: the chat template when the tokenizer has one, a plain fallback otherwise."""
    if tok.chat_template:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]
    return tok(f"{system}\n\n{user}\n\n", add_special_tokens=True)["input_ids"]


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _EntropyRecorder(LogitsProcessor):
    """Records H(softmax(raw logits)) per row at every decoding step; leaves the scores unchanged."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []  # each (R,)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float(), dim=-1)  # (R, V)
        self.steps.append(-(logp.exp() * logp).sum(-1).cpu())
        return scores


class Engine(Protocol):
    """What evaluation needs of a generation backend (HFEngine; VLLMEngine on a GPU)."""

    def generate(self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, n_samples: int = 1, batch_size: int = 16, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]:
        """`n_samples` completions of each prompt (token ids), without the end-of-sequence token."""
        ...

    def sequence_loglik(self, contexts: list[list[int]], continuations: list[list[int]],
                        batch_size: int = 16) -> list[float]:
        """Sum of log p(continuation | context) per pair (multiple-choice options)."""
        ...

    def hf(self) -> HFEngine:
        """The same checkpoint as an HFEngine: full-vocabulary log-probs (`continuation_logprobs`, KL)."""
        ...

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        ...


class HFEngine:
    """One model on one device; the tokenizer is shared across a sweep."""

    def __init__(self, path: str | Path, tok: PreTrainedTokenizerBase, device: str = "auto",
                 dtype: str = "auto", compact: bool = True) -> None:
        self.path, self.tok, self.device = Path(path), tok, pick_device(device)
        torch_dtype = {"auto": torch.bfloat16 if self.device.type == "cuda" else torch.float32,
                       "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype).to(self.device).eval()
        if self.model.get_output_embeddings().weight.shape[0] < len(tok):
            raise UserError(f"{path}: the model's vocabulary is smaller than the tokenizer's ({len(tok)}); "
                            "evaluate checkpoints of one base model per sweep")
        from tunescope.evaluate import compact as cmp

        self.compact = cmp.CompactLlama(self.model) if compact and cmp.supports(self.model) else None

    # ---------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, n_samples: int = 1, batch_size: int = 16, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]:
        """`n_samples` completions per prompt (token ids from `render_prompt`), in input order.

        temperature 0 is greedy. Sampling is seeded per batch from `seed`, so results do not depend on
        what ran before (they do depend on batch composition, as with any batched sampler). When the
        model is a plain Llama on CPU, the compact decoder (`evaluate.compact`) does both; its sampler
        keeps every row to the end of a batch, so it draws from the RNG as `generate` does: the same
        completions, at a fraction of the time.
        """
        if self.compact is not None:
            return self._generate_compact(prompts, max_new_tokens, batch_size, progress, temperature, top_p,
                                          n_samples, seed)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[list[Generation]] = [[] for _ in prompts]
        eos = self._eos_ids()
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, leave=False)
        for b, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start:start + batch_size]
            ids, mask = self._left_pad([prompts[i] for i in idx])  # (B, P)
            recorder = _EntropyRecorder()
            sampling = temperature > 0
            torch.manual_seed(seed * 1_000_003 + b)
            seqs = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=sampling,
                temperature=temperature if sampling else None, top_p=top_p if sampling else None, top_k=None,
                num_return_sequences=n_samples, pad_token_id=self.tok.pad_token_id, eos_token_id=sorted(eos), use_cache=True,
                logits_processor=[recorder],
            )  # (B*n, P+T)
            new = seqs[:, ids.shape[1]:].cpu()  # (B*n, T)
            ent = torch.stack(recorder.steps, dim=1) if recorder.steps else torch.zeros(new.shape[0], 0)
            for r in range(new.shape[0]):
                row = new[r].tolist()
                stop = next((t for t, tid in enumerate(row) if tid in eos), None)
                n_tok = len(row) if stop is None else stop
                text = self.tok.decode(row[:n_tok], skip_special_tokens=True)
                h = float(ent[r, : n_tok + (stop is not None)].sum())  # the eos step is a real choice too
                out[idx[r // n_samples]].append(Generation(text, n_tok, stop is None, h, tuple(row[:n_tok])))
            bar.update(len(idx))
        bar.close()
        return out

    def _generate_compact(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                          progress: str | None, temperature: float = 0.0, top_p: float = 1.0, n_samples: int = 1,
                          seed: int = 0) -> list[list[Generation]]:
        """`generate`'s batches, order and seeds, with the compact decoder: greedy, or sampled with
        each prompt repeated `n_samples` times in a row (as `num_return_sequences` expands a batch)."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[list[Generation]] = [[] for _ in prompts]
        eos, pad = self._eos_ids(), self.tok.pad_token_id
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, leave=False)
        for b, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start:start + batch_size]
            if temperature == 0:
                rows = idx
                done = self.compact.greedy([prompts[i] for i in rows], max_new_tokens, eos, pad)
            else:
                rows = [i for i in idx for _ in range(n_samples)]  # each prompt's samples side by side
                torch.manual_seed(seed * 1_000_003 + b)
                drawn = self.compact.sample([prompts[i] for i in rows], max_new_tokens, eos, pad,
                                            temperature=temperature, top_p=top_p, top_k=0, compact_at=0)
                done = [(ids if truncated else ids[:-1], truncated, h) for ids, truncated, h in drawn]
            for i, (ids, truncated, h) in zip(rows, done):
                text = self.tok.decode(ids, skip_special_tokens=True)
                out[i].append(Generation(text, len(ids), truncated, h, tuple(ids)))
            bar.update(len(idx))
        bar.close()
        return out

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tok.eos_token_id is not None:
            ids.add(self.tok.eos_token_id)
        return ids

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)  # (B, P)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, mask

    # ---------------------------------------------------------------- teacher forcing
    @torch.inference_mode()
    def continuation_logprobs(self, contexts: list[list[int]], continuations: list[list[int]],
                              batch_size: int = 16) -> Iterator[tuple[int, torch.Tensor]]:
        """For each pair, yield (index, log-probs over the vocabulary at the continuation's positions).

        The tensor has shape (L, V), float32 on the CPU, where row t is log p(. | context + cont[:t]),
        so `lp[t, cont[t]]` is the log-probability of the t-th continuation token.
        """
        order = sorted(range(len(contexts)), key=lambda i: -(len(contexts[i]) + len(continuations[i])))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            rows = [contexts[i] + continuations[i] for i in idx]
            ids, mask = self._left_pad(rows)  # (B, S)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, S) positions that ignore left padding
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (B, S, V)
            width = ids.shape[1]
            for r, i in enumerate(idx):
                n = len(continuations[i])
                # the logits at position s predict token s+1: the continuation occupies [width-n, width)
                lp = torch.log_softmax(logits[r, width - n - 1: width - 1].float(), dim=-1)  # (L, V)
                yield i, lp.cpu()

    def sequence_loglik(self, contexts: list[list[int]], continuations: list[list[int]],
                        batch_size: int = 16) -> list[float]:
        """Sum of log p(continuation tokens | context) for each pair (multiple-choice options); with the
        compact decoder, pairs that share a context share its forward pass."""
        if self.compact is not None:
            return self.compact.sequence_loglik(contexts, continuations, batch_size, self.tok.pad_token_id)
        out = [0.0] * len(contexts)
        for i, lp in self.continuation_logprobs(contexts, continuations, batch_size):
            tgt = torch.tensor(continuations[i])  # (L,)
            out[i] = float(lp[torch.arange(len(tgt)), tgt].sum()) if len(tgt) else -math.inf
        return out

    @torch.inference_mode()
    def pooled_hidden_states(self, prompts: list[list[int]], k_last: int = 8, batch_size: int = 16) -> np.ndarray:
        """Per prompt and layer (embeddings, then each block's output), the mean hidden state over the
        prompt's last `k_last` tokens: (N, layers + 1, H), float64 (evaluate/representations.py).
        Rows are left-padded, so every prompt ends in the last column."""
        out = []
        for start in range(0, len(prompts), batch_size):
            ids, mask = self._left_pad(prompts[start:start + batch_size])  # (B, S)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            hs = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True).hidden_states
            m = mask[:, -k_last:, None].float()  # (B, k, 1): a prompt shorter than k pools what it has
            pooled = [(h[:, -k_last:].float() * m).sum(1) / m.sum(1) for h in hs]  # layers + 1 of (B, H)
            out.append(torch.stack(pooled, dim=1).double().cpu().numpy())  # (B, layers + 1, H)
        return np.concatenate(out)

    def hf(self) -> HFEngine:
        """Itself: the HF engine already gives full-vocabulary log-probs."""
        return self

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
