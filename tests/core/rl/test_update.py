"""The update step: behaviour log-probs, micro-batch sums, GAE targets."""

from __future__ import annotations


import pytest
import torch

from toy_rl import ToyRollout, make_policy, make_questions, run_toy, toy_config, toy_reward

from tirl.core.rl.batch import Batch, collate, group_trajectories
from tirl.core.rl.losses import ppo_clip_loss
from tirl.core.rl.update import Modules, _Denominators, _last_token_rewards, _micro_loss, update


def test_first_minibatch_has_ratio_one():
    """Old log-probs are recomputed under the pre-update policy, so one epoch of one
    minibatch sees ratio 1 exactly and clips nothing."""
    _, hist = run_toy(toy_config(steps=2, ppo_epochs=1, minibatch_size=None, grad_accum=1))
    for h in hist:
        assert h["actor/clip_frac"] == 0.0
        assert h["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("algorithm", ["vspo", "ppo"])
def test_micro_token_budget_changes_memory_not_the_update(algorithm):
    """Splitting each forward into one-row micro-batches (the toy rows are 8 tokens) gives
    the same training run: losses are sums over the global trainable-token count."""
    whole, hist_whole = run_toy(toy_config(algorithm=algorithm, steps=3, micro_tokens=None))
    split, hist_split = run_toy(toy_config(algorithm=algorithm, steps=3, micro_tokens=8))
    for a, b in zip(hist_whole, hist_split, strict=True):
        for key in ("reward/mean", "loss/policy", "loss/kl", "actor/clip_frac", "actor/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for (name, p), q in zip(whole.named_parameters(), split.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def test_logits_chunk_changes_memory_not_the_update():
    """Log-probs (policy, old policy, reference) and the entropy bonus from the head run on 3
    positions at a time give the run of the full logits."""
    over = dict(steps=3, entropy_coef=0.1, ppo_epochs=2)
    full, hist_full = run_toy(toy_config(**over, logits_chunk=None))
    chunk, hist_chunk = run_toy(toy_config(**over, logits_chunk=3))
    for a, b in zip(hist_full, hist_chunk, strict=True):
        for key in ("reward/mean", "loss/policy", "loss/kl", "actor/entropy", "actor/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for (name, p), q in zip(full.named_parameters(), chunk.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def test_ppo_terminal_reward_sits_on_the_last_trainable_token():
    """GAE input: the sequence reward at the last mask-1 position (after a tool response,
    padding or trailing prompt tokens), nowhere else."""
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
                        dtype=torch.float32)
    batch = Batch(input_ids=torch.zeros(3, 7, dtype=torch.long),
                  attention_mask=torch.ones(3, 7, dtype=torch.long), loss_mask=mask,
                  sample_logprobs=torch.zeros(3, 6), advantages=torch.zeros(3, 6),
                  reused=torch.zeros(3, dtype=torch.bool))
    out = _last_token_rewards(batch, torch.tensor([0.7, -1.0, 5.0]))
    expected = torch.zeros(3, 6)
    expected[0, 4], expected[1, 1] = 0.7, -1.0
    assert torch.equal(out, expected)


# --- the entropy bonus: from the log-prob forward's logits -------------------------------


def _toy_groups(policy, n_questions=2, group_size=4):
    qs = make_questions(n_questions)
    trajs = ToyRollout(policy)(qs, group_size, seed=0)
    return group_trajectories(qs, trajs, [toy_reward(t, {}) for t in trajs])


def _reference_loss(policy, sub, *, coef, denom):
    """The PPO-clip loss minus the entropy bonus, written out: log-softmax of the logits,
    the picked log-probs, and the entropy from the same distribution."""
    logits = policy(input_ids=sub.input_ids, attention_mask=sub.attention_mask).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    lp = logp.gather(-1, sub.input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    pg, _ = ppo_clip_loss(logprobs=lp, old_logprobs=sub.old_logprobs, advantages=sub.advantages,
                          mask=sub.loss_mask, clip_eps=0.2, num_tokens=denom)
    return pg - coef * (entropy * sub.loss_mask).sum() / denom


def _grads(policy):
    return [p.grad.clone() for p in policy.parameters()]


def test_entropy_bonus_matches_a_written_out_loss_and_its_gradients():
    policy = make_policy()
    batch = collate(_toy_groups(policy), pad_id=0, seq_advantages=[1.0, -1.0, 0.5, -0.5] * 2)
    # Behaviour log-probs off the current policy, so that some ratios clip.
    batch.old_logprobs = batch.sample_logprobs + 0.3 * torch.randn(
        batch.loss_mask.shape, generator=torch.Generator().manual_seed(0)) * batch.loss_mask
    denom = float(batch.loss_mask.sum())
    modules = Modules(policy=policy, critic=None, reference=None, optimizer=None)
    grads = {}
    for coef in (0.0, 0.3):
        cfg = toy_config(entropy_coef=coef, kl_beta=0.0)
        policy.zero_grad()
        loss, _, _ = _micro_loss(cfg, torch.device("cpu"), modules, batch,
                                 _Denominators(tokens=denom, seqs=float(len(batch))))
        loss.backward()
        grads[coef] = _grads(policy)
        policy.zero_grad()
        expected = _reference_loss(policy, batch, coef=coef, denom=denom)
        expected.backward()
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7), coef
        for got, want in zip(grads[coef], _grads(policy), strict=True):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), coef
    # The bonus is in the gradient, not only in the reported loss.
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0], grads[0.3]))


@pytest.mark.parametrize("coef", [0.0, 0.1])
def test_one_policy_forward_per_micro_batch_with_or_without_entropy_bonus(coef):
    """One epoch of one minibatch (no separate behaviour pass) in two micro-batches: the
    policy runs exactly twice, whether the entropy is only reported or in the loss."""
    from accelerate import Accelerator

    policy = make_policy()
    groups = _toy_groups(policy)
    cfg = toy_config(entropy_coef=coef, kl_beta=0.0, batch_prompts=2, minibatch_size=None,
                     ppo_epochs=1, grad_accum=2, micro_tokens=None)
    calls = []
    # The decoder: with logits_chunk the update runs it and the head, not the model's forward.
    policy.get_decoder().register_forward_hook(lambda *_: calls.append(1))
    modules = Modules(policy=policy, critic=None, reference=None,
                      optimizer=torch.optim.AdamW(policy.parameters(), lr=1e-3))
    metrics, _ = update(config=cfg, acc=Accelerator(cpu=True), modules=modules, groups=groups,
                        select_counts=[0, 0], pad_id=0, step=0)
    assert len(calls) == 2
    assert metrics["actor/optimizer_steps"] == 1.0 and metrics["actor/entropy"] > 0
