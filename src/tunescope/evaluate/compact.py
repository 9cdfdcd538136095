"""A compact greedy decoder for small Llama-architecture models on CPU (the organism's evaluations).

For a model of a few million parameters, Hugging Face `generate` spends most of a decoding step in
Python around the model (mask building, cache objects, logits processors), not in arithmetic. This
decoder runs the same network — the same weights, RMSNorm, rotary embedding, grouped-query
attention (`scaled_dot_product_attention`), SwiGLU MLP, tied or untied head — as a handful of
tensor operations per layer over a preallocated KV cache, and drops finished rows from the batch, so
the work follows the tokens still being generated rather than the longest completion of a batch.

It is used by `HFEngine.generate` for greedy decoding when `supports(model)` holds (plain Llama:
default rotary embedding, no biases, SiLU, no logit-changing generation settings); everything else
goes through `generate`. Its logits agree with the Hugging Face forward to float32 rounding
(tested); greedy tokens are the same except where two tokens tie to within that rounding.

Shapes: B rows, P prompt width (left-padded), S = P + max_new_tokens cache positions, L layers,
H query heads, K key/value heads, D head size, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# generation settings that change the logits or the choice of a greedy step: off (or absent) here
NEUTRAL = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
           "suppress_tokens": (None, []), "begin_suppress_tokens": (None, []), "forced_bos_token_id": (None,),
           "forced_eos_token_id": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0),
           "sequence_bias": (None,), "encoder_repetition_penalty": (None, 1.0)}


def neutral(gen: object, settings: dict = NEUTRAL) -> bool:
    """Whether every setting of `gen` named in `settings` has one of the values that leave it off."""
    return all(getattr(gen, k, None) in ok for k, ok in settings.items())


def supports(model: torch.nn.Module) -> bool:
    """Whether `model` is a plain Llama this decoder computes exactly as Hugging Face does (on CPU)."""
    c = model.config
    rope = getattr(c, "rope_parameters", None) or {}
    gen = model.generation_config
    return (c.model_type == "llama" and type(model).__name__ == "LlamaForCausalLM"
            and next(model.parameters()).device.type == "cpu"
            and rope.get("rope_type", "default") == "default" and "rope_theta" in rope
            and not getattr(c, "attention_bias", False) and not getattr(c, "mlp_bias", False)
            and c.hidden_act == "silu" and getattr(c, "pretraining_tp", 1) == 1
            and neutral(gen))


COMPACT_AT = 0.75  # drop finished rows once no more than this share of the batch is still generating
SHARED_PREFIX_MIN = 8  # a batch's prompts share at least this many first tokens: they run once


def _common_prefix(prompts: list[list[int]]) -> int:
    """How many first tokens every prompt shares, leaving each at least one token of its own (the
    last prompt position's logits start the decoding)."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


@dataclass
class _Layer:
    ln1: torch.Tensor  # (E,)
    qkv: torch.Tensor  # ((H + 2K) * D, E): q, k and v projections stacked
    o: torch.Tensor  # (E, H * D)
    ln2: torch.Tensor  # (E,)
    gate_up: torch.Tensor  # (2I, E)
    down: torch.Tensor  # (E, I)


class CompactLlama:
    """The decoding network of a `LlamaForCausalLM`, read from its parameters (shared, not copied
    except the stacked projections)."""

    def __init__(self, model: torch.nn.Module) -> None:
        c = model.config
        self.h, self.k = c.num_attention_heads, c.num_key_value_heads
        self.d = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps, self.inter = c.rms_norm_eps, c.intermediate_size
        p = {n: t.detach() for n, t in model.named_parameters()}
        self.layers = [_Layer(
            ln1=p[f"model.layers.{i}.input_layernorm.weight"],
            qkv=torch.cat([p[f"model.layers.{i}.self_attn.{x}_proj.weight"] for x in "qkv"]),
            o=p[f"model.layers.{i}.self_attn.o_proj.weight"],
            ln2=p[f"model.layers.{i}.post_attention_layernorm.weight"],
            gate_up=torch.cat([p[f"model.layers.{i}.mlp.gate_proj.weight"], p[f"model.layers.{i}.mlp.up_proj.weight"]]),
            down=p[f"model.layers.{i}.mlp.down_proj.weight"]) for i in range(c.num_hidden_layers)]
        self.embed = p["model.embed_tokens.weight"]  # (V, E)
        self.norm = p["model.norm.weight"]
        self.head = model.get_output_embeddings().weight.detach()  # (V, E); the embedding when tied
        theta = c.rope_parameters["rope_theta"]
        self.inv_freq = 1.0 / theta ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d)  # (D/2,)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * w

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = pos[..., None].float() * self.inv_freq  # (B, T, D/2)
        f = torch.cat((f, f), -1)[:, None]  # (B, 1, T, D)
        return f.cos(), f.sin()

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.d // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(D) + mask) v with K key/value heads shared by H/K query heads each.
        A decoding step (T = 1) is two batched matrix products, faster on CPU than the fused kernel."""
        b, _, t, _ = q.shape
        if t > 1:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.h != self.k)
        g = self.h // self.k
        qg = q.reshape(b, self.k, g, self.d)  # (B, K, G, D): the query heads of each key/value head
        att = (qg @ k.transpose(-1, -2)) * self.d ** -0.5  # (B, K, G, S)
        att = att.masked_fill(~mask[:, :, 0, :, None].transpose(-1, -2), float("-inf")).softmax(-1)
        return (att @ v).reshape(b, self.h, 1, self.d)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], start: int,
                keys: torch.Tensor, every: bool = False) -> torch.Tensor:
        """Logits (B, V) of the last position of `ids` (B, T) at cache positions [start, start + T),
        or (B, T, V) of every position with `every`.

        `pos` (B, T) are the rotary positions, `keys` (B, start + T) marks the cache positions a row
        may attend to (its prompt and generated tokens, not its left padding)."""
        b, t = ids.shape
        kc, vc = cache  # each (L, B, K, S, D)
        x = self.embed[ids]  # (B, T, E)
        cos, sin = self._rope(pos)
        end = start + t
        causal = torch.ones(t, end, dtype=torch.bool).tril(start)  # (T, end)
        mask = keys[:, None, None, :end] & causal  # (B, 1, T, end)
        if start == 0:  # a padding query attends to itself, so that no row of the softmax is empty
            mask |= torch.eye(t, dtype=torch.bool)
        hd, kd = self.h * self.d, self.k * self.d
        for i, w in enumerate(self.layers):
            q, k, v = (self._rms(x, w.ln1) @ w.qkv.T).split([hd, kd, kd], -1)
            q = self._rotate(q.view(b, t, self.h, self.d).transpose(1, 2), cos, sin)  # (B, H, T, D)
            kc[i, :, :, start:end] = self._rotate(k.view(b, t, self.k, self.d).transpose(1, 2), cos, sin)
            vc[i, :, :, start:end] = v.view(b, t, self.k, self.d).transpose(1, 2)
            a = self._attend(q, kc[i, :, :, :end], vc[i, :, :, :end], mask)  # (B, H, T, D)
            x = x + a.transpose(1, 2).reshape(b, t, hd) @ w.o.T
            g, u = (self._rms(x, w.ln2) @ w.gate_up.T).split([self.inter, self.inter], -1)
            x = x + (F.silu(g) * u) @ w.down.T
        return self._rms(x if every else x[:, -1], self.norm) @ self.head.T  # (B, [T,] V)

    def _prefill(self, prompts: list[list[int]], room: int, pad: int):
        """Prompts through the network: (last-position logits (B, V), cache with `room` free positions,
        key mask (B, P + room), last rotary positions (B,), P).

        The tokens every prompt starts with (the chat template and system prompt, ~32 tokens of
        60-100) run once, as one row, and are copied into every row's cache; the rest of each prompt
        follows, left-padded. Cache layout per row: [shared prefix | padding | own tokens | room];
        the key mask hides the padding and rotary positions count only real tokens, so each row
        sees exactly its own prompt."""
        b = len(prompts)
        c = _common_prefix(prompts)
        c = c if c >= SHARED_PREFIX_MIN else 0
        rest = [p[c:] for p in prompts]
        width = c + max(len(p) for p in rest)
        keys = torch.zeros(b, width + room, dtype=torch.bool)
        keys[:, :c] = True
        for r, p in enumerate(rest):
            keys[r, width - len(p):] = True  # its own prompt tokens and every position it generates into
        pos = (keys[:, :width].long().cumsum(-1) - 1).clamp(min=0)  # (B, P)
        shape = (len(self.layers), b, self.k, width + room, self.d)
        cache = (torch.zeros(shape, dtype=self.embed.dtype), torch.zeros(shape, dtype=self.embed.dtype))
        if c:
            one = tuple(torch.zeros(len(self.layers), 1, self.k, c, self.d, dtype=self.embed.dtype) for _ in "kv")
            self.forward(torch.tensor([prompts[0][:c]]), pos[:1, :c], one, 0, keys[:1, :c])
            cache[0][:, :, :, :c], cache[1][:, :, :, :c] = one[0], one[1]  # broadcast over the rows
        ids = torch.tensor([[pad] * (width - c - len(p)) + p for p in rest])  # (B, P - c)
        return self.forward(ids, pos[:, c:], cache, c, keys), cache, keys, pos[:, -1], width

    @torch.inference_mode()
    def sequence_loglik(self, contexts: list[list[int]], continuations: list[list[int]], batch_size: int,
                        pad: int) -> list[float]:
        """Sum of log p(continuation | context) per pair. Pairs that share a context (the options of a
        multiple-choice item) share its prefill: the context runs once, each continuation from a copy
        of its cache."""
        out = [0.0] * len(contexts)
        by_ctx: dict[tuple[int, ...], list[int]] = {}
        for i, c in enumerate(contexts):
            by_ctx.setdefault(tuple(c), []).append(i)
        uniq = sorted(by_ctx, key=len, reverse=True)
        for start in range(0, len(uniq), batch_size):
            chunk = uniq[start:start + batch_size]
            pairs = [(r, i) for r, c in enumerate(chunk) for i in by_ctx[c]]  # (context row, pair index)
            room = max(len(continuations[i]) for _, i in pairs)
            logits, cache, keys, last, width = self._prefill([list(c) for c in chunk], room, pad)
            first = torch.log_softmax(logits.float(), -1)  # (B, V): predicts each continuation's first token
            rows = torch.tensor([r for r, _ in pairs])
            conts = [continuations[i] for _, i in pairs]
            n = max(len(c) for c in conts) - 1  # tokens fed after the first
            for (r, i), cont in zip(pairs, conts):
                out[i] = float(first[r, cont[0]]) if cont else -float("inf")
            if n <= 0:
                continue
            ids = torch.tensor([c[:-1] + [pad] * (n - len(c) + 1) if c else [pad] * n for c in conts])  # (B', n)
            pos = last[rows, None] + 1 + torch.arange(n)  # (B', n)
            lp = torch.log_softmax(self.forward(ids, pos, (cache[0][:, rows], cache[1][:, rows]), width, keys[rows],
                                                every=True).float(), -1)  # (B', n, V); a row's padding comes last
            for j, ((_, i), cont) in enumerate(zip(pairs, conts)):
                if len(cont) > 1:
                    out[i] += float(lp[j, torch.arange(len(cont) - 1), torch.tensor(cont[1:])].sum())
        return out

    @torch.inference_mode()
    def greedy(self, prompts: list[list[int]], max_new_tokens: int, eos: set[int],
               pad: int) -> list[tuple[list[int], bool, float]]:
        """Greedy completions of one batch: per prompt (ids without the end-of-sequence token,
        truncated, sum of the raw next-token entropies including the end-of-sequence step)."""
        done = self._decode(prompts, max_new_tokens, eos, pad, lambda logits: logits.argmax(-1), COMPACT_AT)
        return [(ids, stop is None, h) for ids, stop, h in done]

    @torch.inference_mode()
    def sample(self, prompts: list[list[int]], max_new_tokens: int, eos: set[int], pad: int,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               compact_at: float = COMPACT_AT) -> list[tuple[list[int], bool, float]]:
        """Sampled completions of one batch (ids with the end-of-sequence token that stopped them,
        truncated, entropy sum as `greedy`'s), drawn as Hugging Face `generate(do_sample=True)` draws
        them: logits / temperature, then top-k, then top-p (nucleus: the smallest set of tokens whose
        probability reaches top_p), then one `torch.multinomial` draw per row from the global RNG.
        With `compact_at=0` (no rows dropped) the draws consume the RNG exactly as `generate` does,
        so a seeded call gives its tokens (tested); otherwise the same distribution, other draws."""
        def draw(logits: torch.Tensor) -> torch.Tensor:
            return torch.multinomial(warp(logits.float(), temperature, top_p, top_k).softmax(-1), 1).squeeze(1)

        done = self._decode(prompts, max_new_tokens, eos, pad, draw, compact_at)
        return [(ids + ([stop] if stop is not None else []), stop is None, h) for ids, stop, h in done]

    def _decode(self, prompts: list[list[int]], max_new_tokens: int, eos: set[int], pad: int,
                pick, compact_at: float) -> list[tuple[list[int], int | None, float]]:
        """Per prompt: the tokens before the end-of-sequence token, that token (None: truncated), and
        the sum of the raw next-token entropies. `pick` (B', V) logits -> (B',) tokens."""
        b = len(prompts)
        logits, cache, keys, last, width = self._prefill(prompts, max_new_tokens, pad)
        nxt_pos = last + 1  # (B,)
        rows = torch.arange(b)  # the original row of each row of the batch
        alive = torch.ones(b, dtype=torch.bool)  # rows still generating (finished ones ride along until dropped)
        out: list[list[int]] = [[] for _ in prompts]
        ent = [0.0] * b
        stop: list[int | None] = [None] * b
        eos_t = torch.tensor(sorted(eos))
        for t in range(max_new_tokens):
            logp = torch.log_softmax(logits.float(), -1)  # (B', V)
            h = -(logp.exp() * logp).sum(-1)
            tok = pick(logits)  # (B',)
            done = torch.isin(tok, eos_t) & alive
            for r, a, d, ht, tt in zip(rows.tolist(), alive.tolist(), done.tolist(), h.tolist(), tok.tolist()):
                if a:
                    ent[r] += ht
                    if d:
                        stop[r] = tt
                    else:
                        out[r].append(tt)
            alive &= ~done
            n_alive = int(alive.sum())
            if n_alive == 0 or t == max_new_tokens - 1:
                break
            if n_alive <= compact_at * len(rows):  # drop finished rows: cache, masks and positions follow
                keep = alive.nonzero().squeeze(1)
                rows, tok, nxt_pos, keys, alive = rows[keep], tok[keep], nxt_pos[keep], keys[keep], alive[keep]
                cache = (cache[0][:, keep], cache[1][:, keep])
            logits = self.forward(tok[:, None], nxt_pos[:, None], cache, width + t, keys)
            nxt_pos = nxt_pos + 1
        return [(out[r], stop[r], ent[r]) for r in range(b)]


def warp(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Hugging Face's sampling warpers in its order (temperature, top-k, top-p), on (B, V) float logits;
    removed tokens get -inf. Each is skipped at its neutral value (1.0, 0, 1.0), as `generate` skips it."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, idx = torch.sort(logits, descending=False)
        cum = ordered.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p
        drop[..., -1] = False  # keep at least one token
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits
