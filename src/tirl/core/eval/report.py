"""The comparison report: tables and figures built from evaluation summaries and histories.

Inputs are plain DataFrames so the same functions serve the Kedro ``report`` node and the
``notebooks/compare_runs.ipynb`` notebook (which rebuilds them from MLflow):

* ``summaries``: one row per (variant, seed, benchmark) with the columns of
  :data:`tirl.core.eval.metrics.SUMMARY_COLUMNS`;
* ``histories``: one row per (variant, seed, step) with the per-step training metrics;
* ``rows``: one row per (variant, seed, question, sample) with the per-question metrics of
  :func:`tirl.core.eval.run.evaluate` (for the paired comparison, :func:`paired_gains`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless (CI, DVC); never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REWARD_COMPONENTS = ("reward/mean", "reward/unscheduled", "reward/format", "reward/quality",
                     "reward/exact_match", "val/exact_match")


def comparison_table(summaries: pd.DataFrame, metric: str = "exact_match",
                     variant_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Variants x benchmarks: mean and (population) std of ``metric`` over seeds."""
    if summaries.empty:
        return pd.DataFrame()
    grouped = summaries.groupby(["variant", "benchmark"])[metric].agg(["mean", "std", "count"])
    grouped["std"] = grouped["std"].fillna(0.0)
    mean = grouped["mean"].unstack("benchmark")
    std = grouped["std"].unstack("benchmark")
    benches = [b for b in summaries["benchmark"].drop_duplicates() if b != "all"] + ["all"]
    benches = [b for b in benches if b in mean.columns]
    order = [v for v in (variant_order or mean.index) if v in mean.index]
    out = pd.DataFrame(index=order)
    for b in benches:
        out[f"{b}"] = mean.loc[order, b]
        out[f"{b}_std"] = std.loc[order, b]
    out["seeds"] = summaries.groupby("variant")["seed"].nunique().reindex(order)
    out.index.name = "variant"
    return out.reset_index()


def to_markdown(table: pd.DataFrame, metric: str = "exact_match", digits: int = 3) -> str:
    """Render :func:`comparison_table` as Markdown cells ``mean ± std``."""
    if table.empty:
        return f"_no results for {metric}_\n"
    benches = [c for c in table.columns if c not in ("variant", "seeds") and
               not c.endswith("_std")]
    header = "| variant | " + " | ".join(benches) + " | seeds |"
    sep = "|" + "---|" * (len(benches) + 2)
    lines = [f"**{metric}** (mean ± std over seeds)", "", header, sep]
    for _, row in table.iterrows():
        cells = ["—" if pd.isna(row[b]) else f"{row[b]:.{digits}f} ± {row[b + '_std']:.{digits}f}"
                 for b in benches]  # "—": the metric does not apply (judge on short-form)
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + f" | {int(row['seeds'])} |")
    return "\n".join(lines) + "\n"


def ablation_table(summaries: pd.DataFrame, variants: dict[str, dict],
                   metric: str = "exact_match") -> pd.DataFrame:
    """The selection x clip grid: rows selection, columns clip, cells mean over seeds
    of ``metric`` on the ``all`` benchmark. ``variants`` maps a variant name to its options
    (``{"selection": ..., "clip": ...}``)."""
    overall = summaries[summaries["benchmark"] == "all"]
    rows = []
    for name, opts in variants.items():
        vals = overall.loc[overall["variant"] == name, metric]
        if len(vals):
            rows.append({"selection": opts.get("selection"), "clip": opts.get("clip"),
                         "mean": float(vals.mean()), "std": float(vals.std(ddof=0))})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return df.pivot_table(index="selection", columns="clip", values="mean").reset_index()


GAIN_COLUMNS = ["variant", "benchmark", "metric", "n", "baseline", "mean", "gain", "ci_low",
                "ci_high", "wins", "losses", "sign_p"]


def paired_gains(rows: pd.DataFrame, metrics: Sequence[str], baseline: str = "sft_only",
                 confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 order: Sequence[str] | None = None) -> pd.DataFrame:
    """Each variant against ``baseline`` on the same held-out questions, per benchmark.

    A variant's score on a question is its mean over seeds (and samples); the gain is the
    mean paired difference. ``ci_low``/``ci_high``: percentile bootstrap over questions
    (``scipy.stats.bootstrap``, paired); ``wins``/``losses``: questions where the variant
    scored higher/lower; ``sign_p``: two-sided sign test on them (``scipy.stats.binomtest``),
    the stricter check when only a handful of questions differ. Columns: :data:`GAIN_COLUMNS`.
    Variants come in ``order`` (the comparison table's), then any others alphabetically.
    """
    from scipy import stats

    if rows.empty or baseline not in set(rows["variant"]):
        return pd.DataFrame(columns=GAIN_COLUMNS)
    keys = ["benchmark", "question_id"]
    out = []
    for metric in metrics:
        if metric not in rows.columns:
            continue
        per_q = (rows.dropna(subset=[metric])
                 .groupby(["variant", *keys])[metric].mean().unstack("variant"))
        base = per_q[baseline]
        present = [v for v in per_q.columns if v != baseline]
        ranked = [v for v in (order or []) if v in present]
        for variant in ranked + sorted(set(present) - set(ranked)):
            pair = pd.DataFrame({"b": base, "v": per_q[variant]}).dropna()
            groups = [(b, g) for b, g in pair.groupby(level="benchmark")] + [("all", pair)]
            for bench, g in groups:
                diff = (g["v"] - g["b"]).to_numpy(dtype=float)
                wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
                low = high = float(diff.mean()) if len(diff) else float("nan")
                if wins + losses and len(diff) > 1:
                    ci = stats.bootstrap((g["v"].to_numpy(float), g["b"].to_numpy(float)),
                                         lambda v, b, axis=-1: (v - b).mean(axis=axis),
                                         paired=True, vectorized=True, method="percentile",
                                         confidence_level=confidence, n_resamples=n_resamples,
                                         rng=np.random.default_rng(seed)).confidence_interval
                    low, high = float(ci.low), float(ci.high)
                out.append({
                    "variant": variant, "benchmark": bench, "metric": metric, "n": len(diff),
                    "baseline": float(g["b"].mean()), "mean": float(g["v"].mean()),
                    "gain": float(diff.mean()), "ci_low": low, "ci_high": high,
                    "wins": wins, "losses": losses,
                    "sign_p": (float(stats.binomtest(wins, wins + losses).pvalue)
                               if wins + losses else 1.0)})
    return pd.DataFrame(out, columns=GAIN_COLUMNS)


def gains_markdown(gains: pd.DataFrame, benchmark: str = "all", digits: int = 3,
                   baseline: str = "sft_only") -> str:
    """The ``benchmark`` rows of :func:`paired_gains` against ``baseline`` as a Markdown table.

    The header names the baseline, so a row that lies below it (the untrained base against
    SFT) reads as what the baseline added, not as a gain of its own."""
    part = gains[gains["benchmark"] == benchmark] if not gains.empty else gains
    if part.empty:
        return "_no paired comparison: the baseline's per-question rows are missing_\n"
    lines = [f"**Gain over `{baseline}`** on `{benchmark}` (paired over questions; 95 % "
             f"bootstrap interval; sign test on the questions that differ)", "",
             f"| variant | metric | n | {baseline} | variant | gain | 95 % CI | wins / losses "
             "| sign-test p |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in part.iterrows():
        lines.append(
            f"| {r['variant']} | {r['metric']} | {int(r['n'])} | {r['baseline']:.{digits}f} | "
            f"{r['mean']:.{digits}f} | {r['gain']:+.{digits}f} | "
            f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}] | "
            f"{int(r['wins'])} / {int(r['losses'])} | {r['sign_p']:.3g} |")
    return "\n".join(lines) + "\n"


def _curves(ax, histories: pd.DataFrame, key: str, title: str) -> None:
    for variant, group in histories.groupby("variant", sort=False):
        if key not in group or group[key].isna().all():
            continue
        group = group[group[key].notna()]
        if key.startswith("val/"):
            # Validation rows hold the figure *after* that step's update (step -1: before RL),
            # so they are drawn at the number of updates done.
            group = group.assign(step=group["step"] + 1)
        per_step = group.groupby("step")[key]
        mean, std = per_step.mean(), per_step.std().fillna(0.0)
        ax.plot(mean.index, mean.values, label=variant)
        ax.fill_between(mean.index, mean - std, mean + std, alpha=0.15)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def reward_curves_figure(histories: pd.DataFrame) -> plt.Figure:
    """Reward and its components per step, one line per variant (band = seed spread)."""
    keys = [k for k in REWARD_COMPONENTS if k in histories.columns]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.5 * max(len(keys), 1), 3.6),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        _curves(ax, histories, key, key)
    if keys:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def zero_advantage_figure(histories: pd.DataFrame) -> plt.Figure:
    """Fraction of zero-advantage groups per step (before VSPO replacement)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _curves(ax, histories, "vspo/zero_adv_frac", "fraction of zero-advantage groups")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def eval_bars_figure(summaries: pd.DataFrame, metric: str = "exact_match") -> plt.Figure:
    """Grouped bars: benchmark x variant, error bars = std over seeds."""
    table = comparison_table(summaries, metric)
    benches = [c for c in table.columns if c not in ("variant", "seeds")
               and not c.endswith("_std")]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(benches) * max(len(table), 1) / 3), 3.8))
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(benches))
    for i, (_, row) in enumerate(table.iterrows()):
        ax.bar(x + i * width, [row[b] for b in benches], width,
               yerr=[row[b + "_std"] for b in benches], label=row["variant"], capsize=2)
    ax.set_xticks(x + width * (len(table) - 1) / 2, benches, rotation=20, fontsize=8)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def frame_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A plain Markdown table of ``frame`` (floats rounded), without extra dependencies."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "—" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
