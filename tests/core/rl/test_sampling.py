"""The prompt sampler: epochs without repeats, resumable state."""

from __future__ import annotations

from tirl.core.rl.sampling import PromptSampler


def test_sampler_covers_each_epoch_without_repeats_and_resumes():
    s = PromptSampler(10, 3, seed=1)
    epoch0 = [i for _ in range(3) for i in s.next_batch()]
    assert len(set(epoch0)) == 9  # tail of 1 skipped, no repeats within the epoch
    state = s.state_dict()
    nxt = s.next_batch()
    assert s.epoch == 1
    t = PromptSampler(10, 3, seed=1)
    t.load_state_dict(state)
    assert t.next_batch() == nxt
