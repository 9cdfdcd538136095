"""Training on the smoke organism: checkpoints, step log, shared prompt stream, losses (SFT, GRPO,
RLOO, CHORD, DPO against float64 recomputations), freezing, SFT -> GRPO, resume and bad input. Each run is a handful of steps with tiny batches."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from tunescope.checkpoints import list_checkpoints, read_sidecar
from tunescope.errors import UserError
from tunescope.train import load_budget, train
from tunescope.train.data import filter_by_length, gold_message, load_pool, prompt_messages, prompt_stream
from tunescope.weights import WeightFiles
from tunescope.world.task import SYSTEM_PROMPT

# One budget for every run here: SFT and GRPO share it (GRPO: 4 prompts x 2 samples per step).
BUDGET = ["max_steps=4", "prompts_per_step=4", "micro_batch_size=2", "checkpoint_every=0.5",
          "n_train_items=32", "max_completion_length=24", "grpo.num_generations=2", "grpo.temperature=1.0",
          "grpo.rewards=[tags]", "grpo.reward_weights=[1.0]", "grpo.beta=0.04"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A fixed thread count: bit-exact comparisons must not depend on the machine's load."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESCOPE_THREADS", "1")
        yield


def budget(*extra: str):
    return load_budget("smoke", [*BUDGET, *extra])


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    return dict(WeightFiles(model_dir).iter())


def file_hashes(run: Path) -> dict[str, str]:
    return {str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted((run / "checkpoints").rglob("*")) if f.is_file()}


def log(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_run(smoke_organism, tmp_path_factory) -> Path:
    return train("sft", smoke_organism, tmp_path_factory.mktemp("t") / "sft", budget())


@pytest.fixture(scope="module")
def grpo_run(sft_run, tmp_path_factory) -> Path:
    """GRPO started from the SFT run's last checkpoint (SFT -> RL)."""
    start = list_checkpoints(sft_run)[-1].path
    return train("grpo", start, tmp_path_factory.mktemp("t") / "grpo", budget())


def test_sft_writes_checkpoints_at_fractions_with_sidecars_and_totals(sft_run, smoke_organism):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    refs = list_checkpoints(sft_run)
    assert [r.step for r in refs] == [0, 2, 4] and [r.fraction for r in refs] == [0.0, 0.5, 1.0]
    side = read_sidecar(refs[-1].path)
    assert side["method"] == "sft" and side["config"]["max_steps"] == 4 and side["provenance"]["git_revision"]
    AutoModelForCausalLM.from_pretrained(refs[-1].path)
    assert AutoTokenizer.from_pretrained(refs[-1].path).chat_template
    base, first, last = tensors(smoke_organism), tensors(refs[0].path), tensors(refs[-1].path)
    assert all(torch.equal(base[k], first[k]) for k in base)  # step 0 is the base model
    assert any(not torch.equal(base[k], last[k]) for k in base)  # training moved the weights

    lines = log(sft_run)
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]
    for ln in lines:
        assert {"loss", "lr", "grad_norm", "reward_mean", "reward_std", "completion_length", "tokens",
                "seconds", "gen_seconds", "items"} <= set(ln)
    meta = json.loads((sft_run / "run.json").read_text())
    assert meta["status"] == "done" and meta["replicas"]["identical"]
    assert meta["totals"]["tokens_trained"] == sum(ln["tokens"] for ln in lines)
    # tokens trained on, counted independently from the chat template
    cfg = budget()
    task, pool = load_pool(cfg.task, None, cfg.n_train_items)
    by_id = {it.id: it for it in pool}
    tok = AutoTokenizer.from_pretrained(smoke_organism)
    want = sum(len(tok.apply_chat_template(prompt_messages(by_id[i]) + gold_message(by_id[i]), return_dict=False))
               for ln in lines for i in ln["items"])
    assert meta["totals"]["tokens_trained"] == want


def _completion_logprobs(model, tok, item) -> torch.Tensor:
    """float64 log p(gold token) over the assistant turn, teacher-forced."""
    prompt = tok.apply_chat_template(prompt_messages(item), add_generation_prompt=True, return_dict=False)
    full = tok.apply_chat_template(prompt_messages(item) + gold_message(item), return_dict=False)
    assert full[:len(prompt)] == prompt
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0].double()  # (T, V)
    logp = torch.log_softmax(logits[:-1], dim=-1)  # position t predicts token t + 1
    targets = torch.tensor(full[1:])
    return logp.gather(1, targets[:, None])[:, 0][len(prompt) - 1:]  # (completion tokens,)


@pytest.mark.parametrize("loss_type", ["nll", "dft", "asft"])
def test_first_step_loss_matches_float64_recomputation(loss_type, sft_run, smoke_organism, tmp_path):
    """Step 1 is computed with the base weights: its logged loss is the token-mean over the step's
    completion tokens (over both accumulation micro-batches) of -log p (nll) or -p log p (dft; asft,
    whose KL to the start model is 0 before the first update)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = sft_run
    if loss_type != "nll":
        run = train("sft", smoke_organism, tmp_path / loss_type, budget(f"sft.loss_type={loss_type}", "max_steps=1"))
    first = log(run)[0]
    cfg = budget()
    _, pool = load_pool(cfg.task, None, cfg.n_train_items)
    by_id = {it.id: it for it in pool}
    model = AutoModelForCausalLM.from_pretrained(smoke_organism).eval()
    tok = AutoTokenizer.from_pretrained(smoke_organism)
    lp = torch.cat([_completion_logprobs(model, tok, by_id[i]) for i in first["items"]])
    per_token = -lp if loss_type == "nll" else -lp.exp() * lp
    assert first["loss"] == pytest.approx(per_token.mean().item(), rel=1e-4)
    assert first["completion_length"] == pytest.approx(len(lp) / len(first["items"]))


def test_sft_and_grpo_see_the_same_prompts_at_every_step(sft_run, grpo_run, smoke_organism):
    from transformers import AutoTokenizer

    sft, grpo = log(sft_run), log(grpo_run)
    assert [ln["items"] for ln in sft] == [ln["items"] for ln in grpo]
    cfg = budget()
    _, pool = load_pool(cfg.task, None, cfg.n_train_items)
    pool = filter_by_length(pool, AutoTokenizer.from_pretrained(smoke_organism), cfg.max_prompt_length,
                            cfg.max_completion_length)
    stream = [it.id for it in prompt_stream(pool, cfg.max_steps * cfg.prompts_per_step, cfg.seed)]
    assert [i for ln in sft for i in ln["items"]] == stream
    assert len(set(stream)) == len(stream)  # 16 distinct problems from a pool of more than 16


def test_grpo_from_an_sft_checkpoint_logs_rewards_kl_and_generation(grpo_run, sft_run):
    lines = log(grpo_run)
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]
    for ln in lines:
        assert 0.0 <= ln["reward_mean"] <= 1.0 and ln["reward_std"] >= 0.0 and "kl" in ln
        assert ln["reward_tags"] == ln["reward_mean"]  # one reward function with weight 1
        assert 0 < ln["gen_seconds"] < ln["seconds"] and ln["tokens_generated"] > 0
        # tokens generated = mean completion length x 8 completions
        assert ln["tokens_generated"] == round(ln["completion_length"] * 8)
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before the first update
    refs = list_checkpoints(grpo_run)
    start = list_checkpoints(sft_run)[-1].path
    assert read_sidecar(refs[0].path)["base_model"] == str(start)
    a, b = tensors(start), tensors(refs[0].path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((grpo_run / "run.json").read_text())
    assert meta["totals"]["tokens_generated"] == sum(ln["tokens_generated"] for ln in lines)
    assert 0 < meta["totals"]["generation_seconds"] < meta["totals"]["train_seconds"]


@pytest.mark.parametrize("key, selector, frozen_if", [
    ("freeze", "gate,up,down@1", lambda n: ".layers.1.mlp." in n),
    ("freeze", "gate,up,down@60%-80%", lambda n: ".layers.1.mlp." in n),  # a share of depth: layer 1 of 2
    ("train_only", "q,k", lambda n: not ("q_proj" in n or "k_proj" in n)),
])
def test_frozen_tensors_are_bit_identical(key, selector, frozen_if, smoke_organism, tmp_path):
    run = train("sft", smoke_organism, tmp_path / "run", budget("max_steps=2", f"{key}={selector}",
                                                                "tensorboard=true"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    base, last = tensors(smoke_organism), tensors(list_checkpoints(run)[-1].path)
    frozen = [k for k in base if frozen_if(k)]
    trained = [k for k in base if not frozen_if(k)]
    assert frozen and trained
    assert all(torch.equal(base[k], last[k]) for k in frozen)
    assert all(not torch.equal(base[k], last[k]) for k in trained)


def test_selector_outside_the_model_or_matching_nothing_is_an_error(smoke_organism, tmp_path):
    with pytest.raises(UserError, match="selector 'q@5-9': layer range '5-9' is outside the model, which has layers 0-1"):
        train("sft", smoke_organism, tmp_path / "run", budget("freeze=[q@5-9]"))
    with pytest.raises(UserError, match="matches no tensor"):
        train("sft", smoke_organism, tmp_path / "run", budget("freeze=[lm_head@1]"))


def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(sft_run, smoke_organism, tmp_path):
    run = tmp_path / "run"
    train("sft", smoke_organism, run, budget(), stop_after=2)
    assert [r.step for r in list_checkpoints(run)] == [0, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "stopped at step 2"
    before = file_hashes(run)
    with pytest.raises(UserError, match="pass --resume"):
        train("sft", smoke_organism, run, budget())
    with pytest.raises(UserError, match="resume it with --model"):
        train("sft", list_checkpoints(sft_run)[-1].path, run, budget(), resume=True)
    with pytest.raises(UserError, match="these keys differ: lr"):
        train("sft", smoke_organism, run, budget("lr=1e-3"), resume=True)
    train("sft", smoke_organism, run, budget(), resume=True)
    after = file_hashes(run)
    assert {k: after[k] for k in before} == before  # written checkpoints are never touched
    a, b = tensors(list_checkpoints(sft_run)[-1].path), tensors(list_checkpoints(run)[-1].path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [ln["loss"] for ln in log(run)] == [ln["loss"] for ln in log(sft_run)]


def test_bad_model_and_cli_errors(smoke_organism, tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM

    from tunescope.cli import main

    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)).save_pretrained(bert)
    with pytest.raises(UserError, match="BertForMaskedLM, not a causal language model"):
        train("sft", bert, tmp_path / "run", budget())
    assert main(["train", "sft", "--model", str(bert), "--out", str(tmp_path / "r"), "--config", "smoke",
                 "lr=1e-5"]) == 2
    assert "not a causal language model" in capsys.readouterr().err
    assert main(["train", "grpo", "--model", str(smoke_organism), "--out", str(tmp_path / "r"), "--config",
                 "smoke", "grpo.num_generations=3"]) == 2
    assert "change micro_batch_size" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            train("grpo", smoke_organism, tmp_path / "r", budget("grpo.use_vllm=true"))
    assert not (tmp_path / "r").exists()


def test_grpo_resume_reproduces_sampling_and_weights(grpo_run, sft_run, tmp_path):
    """Resuming restores the RNG too: the resumed GRPO run samples the same completions (same
    rewards) and ends with the same weights as the uninterrupted one."""
    start = list_checkpoints(sft_run)[-1].path
    run = tmp_path / "grpo"
    train("grpo", start, run, budget(), stop_after=2)
    with open(run / "log.jsonl", "a") as f:  # what a run killed mid-append leaves: half a line
        f.write('{"step": 3, "fraction": 0.7')
    train("grpo", start, run, budget(), resume=True)
    a, b = log(grpo_run), log(run)
    assert [ln["reward_mean"] for ln in a] == [ln["reward_mean"] for ln in b]
    assert [ln["tokens_generated"] for ln in a] == [ln["tokens_generated"] for ln in b]
    wa, wb = tensors(list_checkpoints(grpo_run)[-1].path), tensors(list_checkpoints(run)[-1].path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sft_on_a_jsonl_dataset(smoke_organism, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"What is {i} + 2?", "solution": f"{i} + 2 = {i + 2}.", "answer": str(i + 2)}
            for i in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = train("sft", smoke_organism, tmp_path / "run", budget("task=null", f"dataset={data}", "max_steps=1"))
    (line,) = log(run)
    assert len(line["items"]) == 4 and set(line["items"]) <= {r["id"] for r in rows}
    assert json.loads((run / "run.json").read_text())["data"]["pool"] == 6


def test_grpo_gradient_is_the_policy_gradient_of_the_task_reward(smoke_organism, tmp_path):
    """One generation batch through TRL's GRPOTrainer with the study's settings (dr_grpo, rewards
    not std-scaled, temperature 0.6; rewards correct + 0.2 tags, so that the smoke organism's group
    rewards vary). Its gradient must equal a float64
    recomputation from the decoded completions alone: rewards re-scored from the text and the
    item, advantage = reward - mean of the prompt's group, loss = -sum A * log softmax(z / T)
    over completion tokens / (completions x max_completion_length)."""
    from collections import defaultdict

    from transformers import AutoModelForCausalLM

    from tunescope.train.callbacks import StepRecorder
    from tunescope.train.grpo import TAGS, build_grpo_trainer, grpo_args
    from tunescope.train.run import common_args, load_model

    cfg = load_budget("smoke", ["max_steps=1", "prompts_per_step=4", "grpo.num_generations=4",
                                "micro_batch_size=16", "n_train_items=32", "max_completion_length=24",
                                "grpo.temperature=0.6", "grpo.rewards=[correct,tags]",
                                "grpo.reward_weights=[1.0,0.2]", "grpo.beta=0.0"])
    lm, tok = load_model(smoke_organism)
    task, pool = load_pool(cfg.task, None, cfg.n_train_items)
    stream = prompt_stream(pool, cfg.prompts_per_step, cfg.seed)
    trainer = build_grpo_trainer(lm, tok, stream, task, {it.id: it for it in pool}, cfg,
                                 grpo_args(cfg, common_args(cfg, tmp_path), 1), [], StepRecorder())
    torch.manual_seed(0)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    got = {n: p.grad.double() for n, p in trainer.model.named_parameters()}

    p_ids, p_mask = batch["prompt_ids"], batch["prompt_mask"]
    c_ids, c_mask = batch["completion_ids"], batch["completion_mask"]
    by_prompt = {it.prompt: it for it in stream}
    items, rewards = [], []
    for p, c, m in zip(p_ids, c_ids, c_mask):
        item = next(it for text, it in by_prompt.items() if text in tok.decode(p))
        text = tok.decode(c[m.bool()], skip_special_tokens=True)
        items.append(item.id)
        rewards.append(task.score(item, text) + 0.2 * 0.25 * sum(text.count(t) == 1 for t in TAGS))
    groups = defaultdict(list)
    for i, r in zip(items, rewards):
        groups[i].append(r)
    assert sorted(len(g) for g in groups.values()) == [4, 4, 4, 4]
    adv = torch.tensor([r - sum(groups[i]) / 4 for i, r in zip(items, rewards)], dtype=torch.float64)
    assert torch.allclose(batch["advantages"].double(), adv, atol=1e-6)
    assert adv.abs().sum() > 0  # the batch carries a learning signal

    ref = AutoModelForCausalLM.from_pretrained(smoke_organism).double().train()
    ids, mask = torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1)
    logits = ref(input_ids=ids, attention_mask=mask).logits[:, p_ids.shape[1] - 1:-1] / 0.6
    logp = torch.log_softmax(logits, -1).gather(-1, c_ids[..., None])[..., 0]
    loss = -(adv[:, None] * logp * c_mask).sum() / (len(ids) * cfg.max_completion_length)
    loss.backward()
    for name, p in ref.named_parameters():
        assert p.grad.norm() > 0, name
        assert (got[name] - p.grad).norm() <= 1e-4 * p.grad.norm(), name  # float32 vs float64


def test_rloo_gradient_is_reinforce_with_the_leave_one_out_baseline(smoke_organism, tmp_path):
    """One generation batch through TRL's RLOOTrainer (beta 0, one pass, rewards correct + 0.2 tags).
    Its gradient must equal a float64 recomputation from the decoded completions alone: rewards
    re-scored from the text and the item, A_i = r_i - mean of the other samples of the prompt,
    loss = -mean_i A_i * sum_t log softmax(z / T)[y_t] over the completion's tokens."""
    from collections import defaultdict

    from transformers import AutoModelForCausalLM

    from tunescope.train.callbacks import StepRecorder
    from tunescope.train.grpo import TAGS
    from tunescope.train.rloo import build_rloo_trainer, rloo_args
    from tunescope.train.run import common_args, load_model

    k = 4
    cfg = load_budget("smoke", ["max_steps=1", "prompts_per_step=4", f"rloo.num_generations={k}",
                                "micro_batch_size=16", "n_train_items=32", "max_completion_length=24",
                                "rloo.temperature=0.6", "rloo.rewards=[correct,tags]",
                                "rloo.reward_weights=[1.0,0.2]", "rloo.beta=0.0"])
    lm, tok = load_model(smoke_organism)
    task, pool = load_pool(cfg.task, None, cfg.n_train_items)
    stream = prompt_stream(pool, cfg.prompts_per_step, cfg.seed)
    trainer = build_rloo_trainer(lm, tok, stream, task, {it.id: it for it in pool}, cfg,
                                 rloo_args(cfg, common_args(cfg, tmp_path), 1), [], StepRecorder())
    torch.manual_seed(0)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    got = {n: p.grad.double() for n, p in trainer.model.named_parameters()}

    p_ids, p_mask = batch["prompt_ids"], batch["prompt_mask"]
    c_ids, c_mask = batch["completion_ids"], batch["completion_mask"]
    by_prompt = {it.prompt: it for it in stream}
    items, rewards = [], []
    for p, c, m in zip(p_ids, c_ids, c_mask):
        item = next(it for text, it in by_prompt.items() if text in tok.decode(p))
        text = tok.decode(c[m.bool()], skip_special_tokens=True)
        items.append(item.id)
        rewards.append(task.score(item, text) + 0.2 * 0.25 * sum(text.count(t) == 1 for t in TAGS))
    groups = defaultdict(list)
    for i, r in zip(items, rewards):
        groups[i].append(r)
    assert sorted(len(g) for g in groups.values()) == [k] * 4
    adv = torch.tensor([r - (sum(groups[i]) - r) / (k - 1) for i, r in zip(items, rewards)], dtype=torch.float64)
    assert torch.allclose(batch["advantages"].double(), adv, atol=1e-6)
    assert adv.abs().sum() > 0  # the batch carries a learning signal

    ref = AutoModelForCausalLM.from_pretrained(smoke_organism).double().train()
    ids, mask = torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1)
    logits = ref(input_ids=ids, attention_mask=mask).logits[:, p_ids.shape[1] - 1:-1] / 0.6
    logp = torch.log_softmax(logits, -1).gather(-1, c_ids[..., None])[..., 0]
    loss = -(adv * (logp * c_mask).sum(1)).mean()
    loss.backward()
    for name, p in ref.named_parameters():
        assert p.grad.norm() > 0, name
        assert (got[name] - p.grad).norm() <= 1e-4 * p.grad.norm(), name  # float32 vs float64


def test_rloo_run_from_the_sft_checkpoint_logs_rewards_on_the_shared_stream(sft_run, tmp_path):
    start = list_checkpoints(sft_run)[-1].path
    run = train("rloo", start, tmp_path / "rloo", budget("rloo.num_generations=2", "rloo.temperature=1.0",
                                                        "rloo.rewards=[tags]", "rloo.reward_weights=[1.0]"))
    lines = log(run)
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]
    assert [ln["items"] for ln in lines] == [ln["items"] for ln in log(sft_run)]  # the same prompts per step
    for ln in lines:
        assert 0.0 <= ln["reward_mean"] <= 1.0 and ln["reward_tags"] == ln["reward_mean"]
        assert 0 < ln["gen_seconds"] < ln["seconds"] and ln["tokens_generated"] == round(ln["completion_length"] * 8)
    meta = json.loads((run / "run.json").read_text())
    assert meta["method"] == "rloo" and meta["status"] == "done"
    assert [c.step for c in list_checkpoints(run)] == [0, 2, 4]
    assert not torch.equal(tensors(list_checkpoints(run)[0].path)["model.embed_tokens.weight"],
                           tensors(list_checkpoints(run)[-1].path)["model.embed_tokens.weight"])


def test_dpo_loss_and_gradient_match_a_float64_recomputation(smoke_organism, tmp_path):
    """One batch of pairs through TRL's DPOTrainer, the policy moved off the reference by noise:
    loss = -mean log sigmoid(beta * [(lp(y_w) - lp_ref(y_w)) - (lp(y_l) - lp_ref(y_l))]), lp summed over
    the completion's tokens, recomputed in float64 from the batch's ids and masks; and its gradient."""
    from transformers import AutoModelForCausalLM

    from tunescope.train.callbacks import StepRecorder
    from tunescope.train.dpo import build_dpo_trainer, dpo_args
    from tunescope.train.run import common_args, load_model
    from tunescope.world.task import format_completion

    beta = 0.5
    cfg = load_budget("smoke", ["max_steps=1", "prompts_per_step=4", "micro_batch_size=4", "n_train_items=4",
                                f"dpo.beta={beta}"])
    lm, tok = load_model(smoke_organism)
    _, pool = load_pool(cfg.task, None, 4)
    pairs = {it.id: {"chosen": format_completion(it.solution, it.answer),
                     "rejected": format_completion(it.solution, str(int(it.answer) + 1))} for it in pool}
    trainer = build_dpo_trainer(lm, tok, pool, pairs, dpo_args(cfg, common_args(cfg, tmp_path), 1), [], StepRecorder())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    moved = {n: p.detach().double().clone() for n, p in trainer.model.named_parameters()}
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    got = {n: p.grad.double() for n, p in trainer.model.named_parameters()}

    ids, att, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]  # (2B, S): chosen, rejected

    def seq_logp(model):
        lp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].double(), -1)
        return (lp.gather(-1, ids[:, 1:, None])[..., 0] * comp[:, 1:]).sum(1)  # (2B,)

    ref = AutoModelForCausalLM.from_pretrained(smoke_organism).double().eval()
    pol = AutoModelForCausalLM.from_pretrained(smoke_organism).double().train()
    pol.load_state_dict(moved, strict=False)
    with torch.no_grad():
        r = seq_logp(ref)
    d = seq_logp(pol) - r
    dw, dl = d.chunk(2)
    want = -torch.nn.functional.logsigmoid(beta * (dw - dl)).mean()
    assert abs(loss.item() - want.item()) < 1e-5 and abs(want.item() - math.log(2)) > 1e-3
    want.backward()
    for name, p in pol.named_parameters():
        if p.grad is None:
            continue
        assert (got[name] - p.grad).norm() <= 1e-4 * p.grad.norm() + 1e-9, name  # float32 vs float64


def test_dpo_pairs_come_from_the_verifier_and_the_run_logs_them(sft_run, smoke_organism, tmp_path):
    from tunescope.world import get_task

    run = train("dpo", smoke_organism, tmp_path / "dpo", budget("dpo.temperature=1.0", "lr=1e-3"))
    pairs = [json.loads(ln) for ln in (run / "pairs.jsonl").read_text().splitlines()]
    task = get_task("maths")
    _, pool = load_pool("maths", None, 32)
    by_id = {it.id: it for it in pool}
    assert pairs and all(p["item_id"] in by_id for p in pairs)
    for p in pairs:
        it = by_id[p["item_id"]]
        assert task.score(it, p["rejected"]) == 0.0  # rejected: a wrong sample of the start model
        gold = p["chosen_source"] == "gold"
        assert task.score(it, p["chosen"]) == 1.0 and gold == (p["correct_samples"] == 0)
    lines = log(run)
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]
    assert {i for ln in lines for i in ln["items"]} <= {p["item_id"] for p in pairs}  # only problems with a pair
    assert all(len(ln["items"]) == 4 and ln["dpo_margins"] is not None for ln in lines)
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference before the first update
    meta = json.loads((run / "run.json").read_text())
    cost = json.loads((run / "pairs.json").read_text())
    assert meta["method"] == "dpo" and cost["pairs"] == len(pairs) and cost["tokens_generated"] > 0
    assert meta["totals"]["tokens_generated"] == cost["tokens_generated"]  # the pairs' sampling is the generation
    assert meta["totals"]["pair_sampling"] == cost
    assert [c.step for c in list_checkpoints(run)] == [0, 2, 4]


def test_anchored_sft_loss_and_gradient_match_a_float64_recomputation(smoke_organism, tmp_path):
    """The anchored-SFT loss on one batch, the policy moved off the start model by noise:
    sum over response tokens of -sg(p_t) log p_t + anchor * KL(pi_ref || pi_theta), over the token
    count, recomputed in float64 from the batch's ids and labels with the start model as pi_ref."""
    from transformers import AutoModelForCausalLM

    from tunescope.train.callbacks import StepRecorder
    from tunescope.train.run import common_args, load_model
    from tunescope.train.sft import build_sft_trainer, sft_args

    anchor = 0.5
    cfg = load_budget("smoke", ["max_steps=1", "prompts_per_step=4", "micro_batch_size=4", "n_train_items=4",
                                "sft.loss_type=asft", f"sft.anchor={anchor}"])
    lm, tok = load_model(smoke_organism)
    _, pool = load_pool(cfg.task, None, 4)
    trainer = build_sft_trainer(lm, tok, pool, sft_args(cfg, common_args(cfg, tmp_path), 1), [], StepRecorder(), cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    moved = {n: p.detach().double().clone() for n, p in trainer.model.named_parameters()}
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    got = {n: p.grad.double() for n, p in trainer.model.named_parameters()}

    ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"][:, 1:]
    mask = labels != -100
    ref = AutoModelForCausalLM.from_pretrained(smoke_organism).double().eval()
    pol = AutoModelForCausalLM.from_pretrained(smoke_organism).double().train()
    pol.load_state_dict(moved, strict=False)
    with torch.no_grad():
        lr = torch.log_softmax(ref(input_ids=ids, attention_mask=att).logits[:, :-1], -1)
    lp = torch.log_softmax(pol(input_ids=ids, attention_mask=att).logits[:, :-1], -1)
    lp_t = lp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    kl = (lr.exp() * (lr - lp)).sum(-1)
    want = ((-lp_t.exp().detach() * lp_t + anchor * kl) * mask).sum() / mask.sum()
    assert abs(loss.item() - want.item()) < 1e-5 and (kl * mask).sum().item() > 1e-3
    want.backward()
    for name, p in pol.named_parameters():
        if p.grad is not None:
            assert (got[name] - p.grad).norm() <= 1e-4 * p.grad.norm() + 1e-9, name  # float32 vs float64


def test_chord_mu_warms_up_then_decays_by_a_cosine():
    from tunescope.train.chord import mu_at
    from tunescope.train.config import CHORDOptions

    o = CHORDOptions(mu_peak=0.8, mu_valley=0.1, mu_warmup=0.2, mu_decay=0.6)
    got = [mu_at(s, 10, o) for s in range(11)]
    want = [0.0, 0.4] + [0.1 + 0.7 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)] + [0.1] * 3
    assert got == pytest.approx(want)


def test_chord_gradient_mixes_the_grpo_gradient_and_the_phi_weighted_sft_gradient(smoke_organism, tmp_path):
    """One step of CHORD with two micro-batches: the summed gradient must equal a float64 recomputation of
    (1 - mu) * GRPO's loss (advantage = reward - group mean, dr_grpo normalisation) + mu * the SFT loss
    -sum sg(p (1 - p)) log p over the gold-solution tokens of the step's own prompts / their count."""
    from collections import defaultdict

    from transformers import AutoModelForCausalLM

    from tunescope.train.callbacks import StepRecorder
    from tunescope.train.chord import build_chord_trainer
    from tunescope.train.grpo import TAGS, grpo_args
    from tunescope.train.run import common_args, load_model
    from tunescope.world.task import format_completion

    mu, k = 0.4, 4
    cfg = load_budget("smoke", ["max_steps=1", "prompts_per_step=4", f"chord.num_generations={k}",
                                "micro_batch_size=8", "n_train_items=32", "max_completion_length=24",
                                "chord.rewards=[correct,tags]", "chord.reward_weights=[1.0,0.2]",
                                f"chord.mu_peak={mu}", f"chord.mu_valley={mu}"])
    lm, tok = load_model(smoke_organism)
    task, pool = load_pool(cfg.task, None, cfg.n_train_items)
    stream = prompt_stream(pool, cfg.prompts_per_step, cfg.seed)
    trainer = build_chord_trainer(lm, tok, stream, task, {it.id: it for it in pool}, cfg,
                                  grpo_args(cfg, common_args(cfg, tmp_path), 2, cfg.chord), [], StepRecorder())
    torch.manual_seed(0)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    trainer.model.zero_grad()
    batches = []
    for _ in range(2):  # the step's two micro-batches, as the training loop feeds them
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        trainer.compute_loss(trainer.model, batch).backward()
        trainer._step += 1
        batches.append(batch)
    got = {n: p.grad.double() for n, p in trainer.model.named_parameters()}

    by_prompt = {it.prompt: it for it in stream}
    ref = AutoModelForCausalLM.from_pretrained(smoke_organism).double().train()
    rl = torch.zeros((), dtype=torch.float64)
    rows = [(p, c, m, b) for b in batches for p, c, m in zip(b["prompt_ids"], b["completion_ids"], b["completion_mask"])]
    items, rewards = [], []
    for p, c, m, _ in rows:
        item = next(it for text, it in by_prompt.items() if text in tok.decode(p))
        text = tok.decode(c[m.bool()], skip_special_tokens=True)
        items.append(item.id)
        rewards.append(task.score(item, text) + 0.2 * 0.25 * sum(text.count(t) == 1 for t in TAGS))
    groups = defaultdict(list)
    for i, r in zip(items, rewards):
        groups[i].append(r)
    assert sorted(len(g) for g in groups.values()) == [k] * 4
    adv = [r - sum(groups[i]) / k for i, r in zip(items, rewards)]
    for b, a in zip(batches, (adv[:8], adv[8:])):
        ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
        mask = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
        logits = ref(input_ids=ids, attention_mask=mask).logits[:, b["prompt_ids"].shape[1] - 1:-1] / 0.6
        logp = torch.log_softmax(logits, -1).gather(-1, b["completion_ids"][..., None])[..., 0]
        rl = rl - (torch.tensor(a, dtype=torch.float64)[:, None] * logp * b["completion_mask"]).sum() / (
            len(ids) * cfg.max_completion_length) / 2
    sft, n = torch.zeros((), dtype=torch.float64), 0
    for it in stream:  # the gold solutions of the step's own prompts, each through the chat template
        prompt = tok.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT},
                                          {"role": "user", "content": it.prompt}], add_generation_prompt=True,
                                         tokenize=False)
        gold = format_completion(it.solution, it.answer)
        full = tok.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT},
                                        {"role": "user", "content": it.prompt},
                                        {"role": "assistant", "content": gold}], tokenize=False)
        assert full.startswith(prompt) and gold in full[len(prompt):]
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        lp = torch.log_softmax(ref(input_ids=torch.tensor([f_ids])).logits[0, :-1], -1)
        tgt = torch.tensor(f_ids[1:])[len(p_ids) - 1:]
        lp_t = lp[len(p_ids) - 1:].gather(-1, tgt[:, None])[:, 0]
        sft = sft - ((lp_t.exp() * (1 - lp_t.exp())).detach() * lp_t).sum()
        n += len(tgt)
    ((1 - mu) * rl + mu * sft / n).backward()
    for name, p in ref.named_parameters():
        assert p.grad.norm() > 0, name
        assert (got[name] - p.grad).norm() <= 1e-4 * p.grad.norm(), name  # float32 vs float64


def test_chord_run_logs_its_sft_weight_falling(smoke_organism, tmp_path):
    run = train("chord", smoke_organism, tmp_path / "chord", budget("chord.num_generations=2"))
    lines = log(run)
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]
    mus = [ln["chord_mu"] for ln in lines]
    assert mus[0] == pytest.approx(0.9) and all(a > b for a, b in zip(mus, mus[1:]))
    assert all(ln["chord_sft_loss"] > 0 and ln["reward_mean"] is not None for ln in lines)
    meta = json.loads((run / "run.json").read_text())
    assert meta["method"] == "chord" and meta["status"] == "done"
    assert meta["totals"]["tokens_generated"] > 0
