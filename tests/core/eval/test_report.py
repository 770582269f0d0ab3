import pandas as pd
import pytest

from tirl.core.eval import report


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
    assert "| a | — | 0.500 ± 0.000 | 1 |" in md


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
