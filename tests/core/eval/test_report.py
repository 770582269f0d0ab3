import matplotlib.pyplot as plt
import pandas as pd
import pytest

from tirl.core.eval import report


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def summaries():
    rows = []
    for variant, base in (("vspo_prs", 0.5), ("grpo_binary", 0.3)):
        for seed, delta in ((0, 0.0), (1, 0.1)):
            for bench, off in (("single_hop", 0.1), ("all", 0.0)):
                rows.append({"variant": variant, "seed": seed, "benchmark": bench,
                             "exact_match": base + delta + off})
    return pd.DataFrame(rows)


def test_comparison_table_mean_and_spread(summaries):
    table = report.comparison_table(summaries, variant_order=["grpo_binary", "vspo_prs"])
    assert list(table["variant"]) == ["grpo_binary", "vspo_prs"]
    row = table.set_index("variant").loc["vspo_prs"]
    assert row["single_hop"] == pytest.approx(0.65)
    assert row["all"] == pytest.approx(0.55)
    assert row["all_std"] == pytest.approx(pd.Series([0.5, 0.6]).std())
    assert row["seeds"] == 2
    md = report.to_markdown(table)
    assert "| vspo_prs | 0.650 ± 0.071 | 0.550 ± 0.071 | 2 |" in md


def test_ablation_grid(summaries):
    variants = {"vspo_prs": {"selection": "value", "clip": "on"},
                "grpo_binary": {"selection": "none", "clip": "off"}}
    grid = report.ablation_table(summaries, variants).set_index("selection")
    assert grid.loc["value", "on"] == pytest.approx(0.55)
    assert pd.isna(grid.loc["value", "off"])


def test_figures_render(summaries, tmp_path):
    hist = pd.DataFrame([{"variant": v, "seed": s, "step": t, "reward/mean": t * 0.1,
                          "reward/format": 0.1, "vspo/zero_adv_frac": 0.5}
                         for v in ("a", "b") for s in (0, 1) for t in range(3)])
    for fig in (report.reward_curves_figure(hist), report.zero_advantage_figure(hist),
                report.eval_bars_figure(summaries)):
        path = tmp_path / "f.png"
        fig.savefig(path)
        assert path.stat().st_size > 1000


def test_frame_markdown():
    df = pd.DataFrame({"selection": ["none", "value"], "off": [0.25, float("nan")]})
    assert report.frame_markdown(df) == (
        "| selection | off |\n|---|---|\n| none | 0.250 |\n| value | — |\n")


def test_markdown_marks_metrics_that_do_not_apply():
    df = pd.DataFrame([{"variant": "a", "seed": 0, "benchmark": b, "judge_score": v}
                       for b, v in (("single_hop", float("nan")), ("all", 0.5))])
    md = report.to_markdown(report.comparison_table(df, "judge_score"), "judge_score")
    assert "| a | — | 0.500 ± n/a | 1 |" in md


def _rows(scores):
    """Per-question rows: ``scores`` maps (variant, seed) to a list of exact-match values on
    questions q0, q1, ... of benchmark single_hop."""
    return pd.DataFrame([{"variant": v, "seed": s, "benchmark": "single_hop",
                          "question_id": f"q{i}", "sample_idx": 0, "exact_match": x}
                         for (v, s), xs in scores.items() for i, x in enumerate(xs)])


def test_paired_gains_counts_wins_and_bounds_the_gain():
    base = [0.0] * 30
    better = [1.0] * 10 + [0.0] * 20  # 10 wins, no losses
    gains = report.paired_gains(_rows({("sft_only", 0): base, ("vspo_prs", 0): better}),
                                ["exact_match"])
    row = gains[(gains["variant"] == "vspo_prs") & (gains["benchmark"] == "all")].iloc[0]
    assert row["n"] == 30 and row["wins"] == 10 and row["losses"] == 0
    assert row["gain"] == pytest.approx(1 / 3)
    assert 0 < row["ci_low"] < row["gain"] < row["ci_high"] <= 1
    assert row["sign_p"] == pytest.approx(2 * 0.5 ** 10)
    # the per-benchmark row equals the overall one here (a single benchmark)
    single = gains[gains["benchmark"] == "single_hop"].iloc[0]
    assert single["gain"] == row["gain"] and single["wins"] == 10


def test_paired_gains_averages_seeds_and_sees_no_gain_in_noise():
    # two seeds that disagree on every question average to the baseline: gain 0, CI around 0
    seed0 = [1.0, 0.0] * 10
    seed1 = [0.0, 1.0] * 10
    gains = report.paired_gains(_rows({("sft_only", 0): [0.5] * 20, ("grpo_prs", 0): seed0,
                                       ("grpo_prs", 1): seed1}), ["exact_match"])
    row = gains[gains["benchmark"] == "all"].iloc[0]
    assert row["gain"] == 0 and row["wins"] == row["losses"] == 0 and row["sign_p"] == 1.0
    # a losing variant gets a negative interval
    worse = report.paired_gains(_rows({("sft_only", 0): [1.0] * 20,
                                       ("ppo_binary", 0): [0.0] * 5 + [1.0] * 15}),
                                ["exact_match"])
    assert worse.iloc[-1]["ci_high"] < 0 and worse.iloc[-1]["losses"] == 5


def test_paired_gains_needs_the_baseline():
    gains = report.paired_gains(_rows({("vspo_prs", 0): [1.0]}), ["exact_match"])
    assert gains.empty and list(gains.columns) == report.GAIN_COLUMNS
    assert "missing" in report.gains_markdown(gains)
    md = report.gains_markdown(report.paired_gains(
        _rows({("sft_only", 0): [0.0, 0.0], ("vspo_prs", 0): [1.0, 0.0]}), ["exact_match"]))
    assert "| vspo_prs | exact_match | 2 | 0.000 | 0.500 | +0.500 |" in md
    # the table names the run every gain is against (a reader of the direct-inference row
    # must see that its gain is against SFT, not the other way round)
    assert "**Gain over `sft_only`**" in md and "| n | sft_only | variant | gain |" in md
    assert "**Gain over `base`**" in report.gains_markdown(report.paired_gains(
        _rows({("base", 0): [0.0, 0.0], ("vspo_prs", 0): [1.0, 0.0]}), ["exact_match"],
        baseline="base"), baseline="base")


def test_paired_gains_lists_variants_in_the_given_order():
    rows = _rows({("sft_only", 0): [0.0] * 4, ("vspo_prs", 0): [1.0] * 4,
                  ("cispo_prs", 0): [0.0] * 4, ("grpo_binary", 0): [1.0] * 4})
    order = ["sft_only", "vspo_prs", "grpo_binary"]  # cispo_prs not named: after, alphabetically
    gains = report.paired_gains(rows, ["exact_match"], order=order)
    assert list(dict.fromkeys(gains["variant"])) == ["vspo_prs", "grpo_binary", "cispo_prs"]
    assert list(dict.fromkeys(report.paired_gains(rows, ["exact_match"])["variant"])) == \
        ["cispo_prs", "grpo_binary", "vspo_prs"]


# --- spreads, clipping, labelled axes, omitted panels -------------------------------------

def _one_seed(summaries):
    return summaries[summaries["seed"] == 0]


def test_a_single_seed_has_no_spread(summaries):
    table = report.comparison_table(_one_seed(summaries))
    assert table["all_std"].isna().all() and (table["seeds"] == 1).all()
    md = report.to_markdown(table)
    assert "| vspo_prs | 0.600 ± n/a | 0.500 ± n/a | 1 |" in md
    assert "± 0.000" not in md
    # two seeds: a real spread, printed as a number
    assert "± n/a" not in report.to_markdown(report.comparison_table(summaries))


def test_comparison_table_groups_by_variant_and_data(summaries):
    both = pd.concat([summaries.assign(data="world"),
                      summaries.assign(data="flashrag", exact_match=0.0)], ignore_index=True)
    table = report.comparison_table(both, by=("variant", "data")).set_index(["variant", "data"])
    assert table.loc[("vspo_prs", "world"), "all"] == pytest.approx(0.55)
    assert table.loc[("vspo_prs", "flashrag"), "all"] == 0.0
    assert "| vspo_prs | flashrag | 0.000 ± 0.000 | 0.000 ± 0.000 | 2 |" in report.to_markdown(
        table.reset_index())
    with pytest.raises(ValueError, match="variant"):
        report.comparison_table(both, by=("data",))


def test_error_bars_are_clipped_to_the_range():
    err = report.error_bar([0.95, 0.02, 0.5], [0.8, -0.1, float("nan")], [1.1, 0.2, 0.6],
                           report.UNIT)
    # below / above the centre: 0.8 -> 0.15 below, 1.1 clipped to 1 -> 0.05 above; a NaN
    # interval draws nothing on that side
    assert err[0].tolist() == pytest.approx([0.15, 0.02, 0.0])
    assert err[1].tolist() == pytest.approx([0.05, 0.18, 0.1])
    assert report.gain_bounds(report.UNIT) == (-1.0, 1.0)
    assert report.clip_to([-2.0, 0.5, 2.0], report.gain_bounds(report.UNIT)).tolist() == \
        [-1.0, 0.5, 1.0]


def _history(keys, seeds=(0, 1), steps=4, value=lambda s, t: 0.9 + 0.1 * s):
    return pd.DataFrame([{"variant": v, "seed": s, "step": t, **{k: value(s, t) for k in keys}}
                         for v in ("a", "b") for s in seeds for t in range(steps)])


def test_seed_bands_are_clipped_and_absent_for_one_seed():
    panel = report.REWARD_PANELS[0]  # reward/mean in [0, 1]
    # seeds at 0.9 and 1.0: mean 0.95, std 0.0707, so mean + std is clipped to 1
    curves = report.seed_curves(_history(["reward/mean"]), panel)
    assert set(curves) == {"a", "b"}
    a = curves["a"]
    assert (a["high"] <= 1.0).all() and a["high"].iloc[0] == 1.0
    assert a["low"].iloc[0] == pytest.approx(0.95 - pd.Series([0.9, 1.0]).std())
    low = report.seed_curves(_history(["reward/mean"], value=lambda s, t: 0.1 * s), panel)
    assert (low["a"]["low"] >= 0.0).all() and low["a"]["low"].iloc[0] == 0.0
    single = report.seed_curves(_history(["reward/mean"], seeds=(0,)), panel)["a"]
    assert single["low"].isna().all() and (single["seeds"] == 1).all()
    fig = report.reward_curves_figure(_history(["reward/mean"], seeds=(0,)))
    assert not fig.axes[0].collections  # no band: one seed has no spread


def _visible(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_every_figure_labels_its_axes(summaries):
    hist = _history([p.key for p in report.REWARD_PANELS + report.TRAINING_PANELS]
                    + ["vspo/zero_adv_frac"])
    sft = pd.DataFrame({"step": range(5), "sft/loss": [2.0, 1.5, 1.0, 0.8, 0.7],
                        "variant": "sft", "seed": 0})
    gains = report.paired_gains(_rows({("sft_only", 0): [0.0] * 10,
                                       ("vspo_prs", 0): [1.0] * 3 + [0.0] * 7}),
                                ["exact_match"])
    rows = pd.concat([summaries, pd.DataFrame([
        {"variant": "sft_only", "seed": 0, "benchmark": b, "exact_match": 0.2}
        for b in ("single_hop", "all")])])
    figures = [report.reward_curves_figure(hist), report.training_curves_figure(hist, sft),
               report.zero_advantage_figure(hist), report.eval_bars_figure(summaries),
               report.eval_bars_figure(rows, gains=gains)]
    for fig in figures:
        for ax in _visible(fig):
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    titles = {ax.get_title() for ax in _visible(figures[1])}
    assert titles == {p.title for p in report.TRAINING_PANELS}
    sft_ax = next(ax for ax in _visible(figures[1]) if ax.get_title() == "SFT loss")
    assert sft_ax.get_xlabel() == "SFT step" and "loss" in sft_ax.get_ylabel()
    assert _visible(figures[0])[0].get_xlabel() == "RL step"
    assert "[0, 1]" in _visible(figures[3])[0].get_ylabel()
    assert "[-1, 1]" in _visible(figures[4])[1].get_ylabel()


def test_panels_of_absent_metrics_are_omitted():
    hist = _history(["reward/mean", "actor/kl"])  # no entropy, length, tool calls, SFT loss
    fig = report.training_curves_figure(hist)
    assert [ax.get_title() for ax in _visible(fig)] == ["KL to the reference"]
    assert [ax.get_title() for ax in _visible(report.reward_curves_figure(hist))] == \
        ["shaped reward"]
    # a metric that is logged but all NaN counts as absent too
    hist["actor/entropy"] = float("nan")
    assert len(_visible(report.training_curves_figure(hist))) == 1
    empty = report.training_curves_figure(pd.DataFrame(columns=["variant", "seed", "step"]))
    assert not _visible(empty)  # nothing drawn, and no empty axes either


def _bar_intervals(ax):
    """(low, high) of every error bar drawn on ``ax``."""
    out = []
    for container in ax.containers:
        if getattr(container, "errorbar", None) is None:
            continue
        for segments in container.errorbar.lines[2]:
            for seg in segments.get_segments():
                out.append((min(seg[:, 1]), max(seg[:, 1])))
    return out


def test_eval_bars_draw_the_paired_intervals_clipped():
    # vspo wins every question: gain 1.0, interval [1, 1]; grpo wins half: interval around 0.5
    rows = _rows({("sft_only", 0): [0.0] * 10, ("vspo_prs", 0): [1.0] * 10,
                  ("grpo_prs", 0): [1.0, 0.0] * 5})
    gains = report.paired_gains(rows, ["exact_match"])
    summaries = pd.DataFrame([{"variant": v, "seed": 0, "benchmark": b, "exact_match": em}
                              for v, em in (("sft_only", 0.0), ("vspo_prs", 1.0),
                                            ("grpo_prs", 0.5))
                              for b in ("single_hop", "all")])
    fig = report.eval_bars_figure(summaries, gains=gains)
    bars, gain_ax = _visible(fig)
    em = _bar_intervals(bars)
    assert em and all(0.0 <= lo <= hi <= 1.0 for lo, hi in em)
    grpo = gains[(gains["variant"] == "grpo_prs") & (gains["benchmark"] == "all")].iloc[0]
    assert any(lo == pytest.approx(0.5 + grpo["ci_low"] - grpo["gain"]) for lo, _ in em)
    assert all(-1.0 <= lo <= hi <= 1.0 for lo, hi in _bar_intervals(gain_ax))
    assert "paired" in bars.get_title()


def test_ablation_markdown_fills_the_grid_or_names_the_runs(summaries):
    grid = {"vspo_value_clip_on": {"selection": "value", "clip": "on"},
            "vspo_none_clip_off": {"selection": "none", "clip": "off"}}
    none_ran = report.ablation_markdown(summaries, grid)
    assert "not run (`vspo_value_clip_on`)" in none_ran and "| value |" in none_ran
    ran = summaries.replace({"variant": {"vspo_prs": "vspo_value_clip_on"}})
    md = report.ablation_markdown(ran, grid)
    assert "| selection \\ clip | on | off |" in md
    assert "| value | 0.550 ± 0.071 (2 seeds) | — |" in md
    assert "| none | — | not run (`vspo_none_clip_off`) |" in md


def test_axes_stay_in_the_metrics_range():
    flat = _history(["reward/mean", "actor/entropy"], value=lambda s, t: 0.0)
    [reward] = _visible(report.reward_curves_figure(flat))
    low, high = reward.get_ylim()
    # a rate that stays at 0: the axis does not reach below 0 by more than the 2 % margin
    assert -0.01 < low <= 0.0 < high
    [entropy] = _visible(report.training_curves_figure(flat))
    assert entropy.get_ylim()[0] > -0.01
