"""vLLM backend (optional; CUDA only): same `generate` / `sequence_loglik` as the HF engine.

Used when `backend` is "vllm", or "auto" with vLLM installed and a GPU present. vLLM does not
expose the full next-token distribution, so completions carry no entropy (NaN) and the KL analysis
loads the checkpoint once more with the HF engine (`hf()`).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from tunescope.errors import UserError
from tunescope.evaluate.engine import Generation, HFEngine


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VLLMEngine:
    def __init__(self, path: str | Path, tok: Any, cfg: Any) -> None:
        if not vllm_available():
            raise UserError("backend vllm needs the vllm package and a CUDA GPU; use backend=hf")
        from vllm import LLM

        self.path, self.tok, self.cfg = Path(path), tok, cfg
        dtype = "auto" if cfg.dtype == "auto" else cfg.dtype
        self.llm = LLM(model=str(path), tokenizer=str(cfg.tokenizer or path), dtype=dtype, seed=cfg.seed,
                       gpu_memory_utilization=0.5, enforce_eager=True)
        self._hf: HFEngine | None = None

    def generate(self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, n_samples: int = 1, batch_size: int = 16, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(n=n_samples, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_new_tokens, seed=seed)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                 use_tqdm=progress is not None)
        result = []
        for o in outs:
            gens = []
            for c in o.outputs:
                ids = list(c.token_ids)
                if ids and c.finish_reason == "stop" and ids[-1] == self.tok.eos_token_id:
                    ids = ids[:-1]
                gens.append(Generation(c.text, len(ids), c.finish_reason == "length", math.nan, tuple(ids)))
            result.append(gens)
        return result

    def sequence_loglik(self, contexts: list[list[int]], continuations: list[list[int]],
                        batch_size: int = 16) -> list[float]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=c + o) for c, o in zip(contexts, continuations)],
                                 params, use_tqdm=False)
        result = []
        for out, ctx, cont in zip(outs, contexts, continuations):
            lps = out.prompt_logprobs[len(ctx):]  # one {token: Logprob} per continuation token
            result.append(sum(lp[t].logprob for lp, t in zip(lps, cont)))
        return result

    def hf(self) -> HFEngine:
        """The same checkpoint in the HF engine (full-vocabulary log-probs for KL)."""
        if self._hf is None:
            self._hf = HFEngine(self.path, self.tok, self.cfg.device, self.cfg.dtype)
        return self._hf

    def close(self) -> None:
        self.llm, self._hf = None, None
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()
