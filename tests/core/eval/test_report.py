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
