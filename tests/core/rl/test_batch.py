"""Batching: token-in/token-out, masks aligned with targets, micro-batch budgets."""

from __future__ import annotations


import pytest
import torch

from toy_rl import ToyRollout, make_policy, make_questions, toy_reward

from tirl.core.rl.batch import collate, group_trajectories, token_budget_split


def test_collate_keeps_token_ids_and_aligns_mask_with_targets():
    policy = make_policy()
    qs = make_questions(2)
    trajs = ToyRollout(policy)(qs, 2, seed=0)
    groups = group_trajectories(qs, trajs, [toy_reward(t, {}) for t in trajs])
    groups[1].origin = "reuse"
    batch = collate(groups, pad_id=0, seq_advantages=[1.0, -1.0, 0.5, -0.5])
    assert batch.input_ids[0].tolist() == trajs[0].token_ids
    assert batch.loss_mask[0].tolist() == [float(m) for m in trajs[0].mask[1:]]
    # advantages live on trainable tokens only
    assert torch.equal(batch.advantages[2], 0.5 * batch.loss_mask[2])
    assert batch.reused.tolist() == [False, False, True, True]
    assert batch.sample_logprobs[3].tolist() == pytest.approx(trajs[3].logprobs[1:])


def test_token_budget_split_covers_each_row_once_within_budget():
    lengths = torch.tensor([5, 9, 3, 9, 1, 7, 2])
    rows = torch.arange(7)
    parts = token_budget_split(lengths, rows, 18)
    # longest first, as many rows as fit under rows x longest <= 18
    assert [p.tolist() for p in parts] == [[1, 3], [5, 0], [2, 6, 4]]
    tight = token_budget_split(lengths, rows, 4)  # rows longer than the budget go alone
    assert sorted(torch.cat(tight).tolist()) == list(range(7))
    assert all(len(p) == 1 or len(p) * int(lengths[p].max()) <= 4 for p in tight)
    assert [p.tolist() for p in token_budget_split(lengths, rows[2:5], None)] == [[2, 3, 4]]
    assert token_budget_split(lengths, rows[:0], 18)[0].numel() == 0


@pytest.mark.parametrize("same_start", [False, True])
def test_model_token_logprobs_with_the_shared_prompt_run_once_equal_the_full_forward(tiny_model,
                                                                              same_start):
    """``needed`` runs the rows' shared prefix once; the log-probs and entropies the loss
    reads are those of the full forward, also when the rows' first sampled tokens agree too
    (the shared prefix is then capped before the first needed target)."""
    from tirl.core.rl.batch import model_token_logprobs

    vocab, rows, width, prompt = tiny_model.config.vocab_size, 4, 48, 20
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (rows, width), generator=g)
    ids[:, :prompt] = ids[0, :prompt]
    if same_start:  # every row samples the same first 6 tokens after the prompt
        ids[:, prompt:prompt + 6] = ids[0, prompt:prompt + 6]
    lens = torch.tensor([width, width - 5, width - 9, width - 2])
    attention = (torch.arange(width)[None] < lens[:, None]).long()
    needed = attention[:, 1:].clone()
    needed[:, :prompt - 1] = 0  # targets 1..prompt-1 are the prompt: never trained on
    full, full_ent = model_token_logprobs(tiny_model, input_ids=ids, attention_mask=attention,
                                          with_entropy=True)
    shared, shared_ent = model_token_logprobs(tiny_model, input_ids=ids, attention_mask=attention,
                                              with_entropy=True, needed=needed)
    read = needed.bool()
    assert shared.shape == full.shape
    assert torch.allclose(full[read], shared[read], atol=1e-5)
    assert torch.allclose(full_ent[read], shared_ent[read], atol=1e-5)
