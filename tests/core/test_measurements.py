"""Results and measurements are split (tirl.core.measurements)."""

from tirl.core.measurements import is_measurement, split_measurements


def test_wall_clock_keys_are_measurements_and_results_are_not():
    for key in ("time/step_s", "rl/time/rollout_s", "perf/tokens_per_s", "sft/train_seconds",
                "sft/tokens_per_s", "sft/probe_seconds"):
        assert is_measurement(key), key
    for key in ("reward/mean", "actor/kl", "sft/loss", "sft/tokens", "val/exact_match",
                "rollout/generated_tokens_mean", "step"):
        assert not is_measurement(key), key


def test_split_keeps_the_step_on_both_sides():
    results, measured = split_measurements({"step": 3, "reward/mean": 0.5, "time/step_s": 9.1})
    assert results == {"step": 3, "reward/mean": 0.5}
    assert measured == {"step": 3, "time/step_s": 9.1}
