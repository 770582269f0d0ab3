"""The comparison report: tables and figures built from evaluation summaries and histories.

Inputs are plain DataFrames so the same functions serve the Kedro ``report`` node and the
``notebooks/compare_runs.ipynb`` notebook (which rebuilds them from MLflow):

* ``summaries``: one row per (variant, seed, benchmark) with the columns of
  :data:`tirl.core.eval.metrics.SUMMARY_COLUMNS`;
* ``histories``: one row per (variant, seed, step) with the per-step training metrics, named
  as the stage's core emits them (``reward/mean``, ``actor/kl``; ``sft/loss`` for SFT);
* ``rows``: one row per (variant, seed, question, sample) with the per-question metrics of
  :func:`tirl.core.eval.run.evaluate` (for the paired comparison, :func:`paired_gains`).

A spread over seeds is the sample standard deviation; with one seed there is none, and it
reads ``n/a`` (a table) or draws no band (a figure). Bands and error bars are clipped to the
range the metric can take (:data:`METRIC_BOUNDS`, :class:`Panel`), so an exact match never
shows an interval below 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless (CI, DVC); never open a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

Bounds = tuple[float | None, float | None]
UNIT: Bounds = (0.0, 1.0)
NON_NEGATIVE: Bounds = (0.0, None)

#: What each summary column can take, and how an axis names it: (label, bounds).
METRIC_AXES: dict[str, tuple[str, Bounds]] = {
    "exact_match": ("exact match [0, 1]", UNIT),
    "f1": ("token F1 [0, 1]", UNIT),
    "la_bleu": ("length-aware BLEU [0, 1]", UNIT),
    "judge_score": ("judge score [0, 1]", UNIT),
    "judge_match": ("judge match [0, 1]", UNIT),
    "format_valid": ("format-valid rate [0, 1]", UNIT),
    "answered": ("answered rate [0, 1]", UNIT),
    "pass_at_k": ("pass@k [0, 1]", UNIT),
    "tool_calls": ("tool calls per trajectory", NON_NEGATIVE),
    "turns": ("assistant turns per trajectory", NON_NEGATIVE),
    "tokens": ("tokens per trajectory", NON_NEGATIVE),
}
METRIC_BOUNDS: dict[str, Bounds] = {k: b for k, (_, b) in METRIC_AXES.items()}


def metric_axis(metric: str) -> tuple[str, Bounds]:
    """``(label, bounds)`` of a summary metric; an unknown one is its own name, unbounded."""
    return METRIC_AXES.get(metric, (metric, (None, None)))


def gain_bounds(bounds: Bounds) -> Bounds:
    """The range of a difference of two values in ``bounds``: [0, 1] -> [-1, 1].

    >>> gain_bounds((0.0, 1.0))
    (-1.0, 1.0)
    >>> gain_bounds((0.0, None))
    (None, None)
    """
    low, high = bounds
    if low is None or high is None:
        return (None, None)
    return (low - high, high - low)


def clip_to(values: np.ndarray | pd.Series | float, bounds: Bounds) -> np.ndarray:
    """``values`` clipped to ``bounds`` (None: open on that side); NaN stays NaN."""
    low, high = bounds
    return np.clip(np.asarray(values, dtype=float), -np.inf if low is None else low,
                   np.inf if high is None else high)


def error_bar(center: Sequence[float], low: Sequence[float], high: Sequence[float],
              bounds: Bounds) -> np.ndarray:
    """matplotlib's asymmetric ``yerr`` (2 x n: distances below, above ``center``) of the
    intervals ``[low, high]`` clipped to ``bounds``; a missing interval (NaN) draws nothing.

    >>> error_bar([0.9], [0.7], [1.2], (0.0, 1.0)).round(3).tolist()
    [[0.2], [0.1]]
    """
    center = np.asarray(center, dtype=float)
    below = center - clip_to(low, bounds)
    above = clip_to(high, bounds) - center
    return np.nan_to_num(np.clip(np.vstack([below, above]), 0.0, None), nan=0.0)


def spread(values: pd.Series) -> float:
    """Sample std of ``values`` over seeds; NaN with fewer than two (no spread to show)."""
    return float(values.std(ddof=1)) if values.count() > 1 else math.nan


def comparison_table(summaries: pd.DataFrame, metric: str = "exact_match",
                     variant_order: Sequence[str] | None = None,
                     by: Sequence[str] = ("variant",)) -> pd.DataFrame:
    """Rows ``by`` (a variant, or e.g. variant x data source) x benchmarks: mean and sample
    std of ``metric`` over seeds (``<benchmark>_std``, NaN for a single seed), and the
    number of seeds. Rows: the variants of ``variant_order`` in that order (any other
    left out), else in order of appearance."""
    if summaries.empty:
        return pd.DataFrame()
    by = list(by)
    if "variant" not in by:
        raise ValueError(f"comparison_table: by={by} must include 'variant'")
    at = by.index("variant")
    order = list(summaries[by].drop_duplicates().itertuples(index=False, name=None))
    if variant_order is not None:  # the listed variants only, in that order
        rank = {v: i for i, v in enumerate(variant_order)}
        order = sorted((k for k in order if k[at] in rank), key=lambda k: rank[k[at]])
    grouped = summaries.groupby([*by, "benchmark"], sort=False)[metric]
    mean = grouped.mean().unstack("benchmark")
    std = grouped.agg(spread).unstack("benchmark")
    benches = [b for b in summaries["benchmark"].drop_duplicates() if b != "all"] + ["all"]
    benches = [b for b in benches if b in mean.columns]
    index = (pd.MultiIndex.from_tuples(order, names=by) if len(by) > 1
             else pd.Index([k[0] for k in order], name=by[0]))
    mean, std = mean.reindex(index), std.reindex(index)
    out = pd.DataFrame(index=index)
    for b in benches:
        out[b] = mean[b].to_numpy()
        out[f"{b}_std"] = std[b].to_numpy()
    out["seeds"] = summaries.groupby(by, sort=False)["seed"].nunique().reindex(index).to_numpy()
    return out.reset_index()


def _key_columns(table: pd.DataFrame) -> list[str]:
    """The row-key columns of a :func:`comparison_table` (before the benchmarks)."""
    return [c for c in table.columns if c in ("variant", "data", "run_id", "parent_run_id",
                                              "git_commit")]


def _benchmarks(table: pd.DataFrame) -> list[str]:
    keys = set(_key_columns(table))
    return [c for c in table.columns if c not in keys and c != "seeds" and not c.endswith("_std")]


def _cell(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "—"  # the metric does not apply (judge on short-form)
    return f"{mean:.{digits}f} ± " + ("n/a" if pd.isna(std) else f"{std:.{digits}f}")


def to_markdown(table: pd.DataFrame, metric: str = "exact_match", digits: int = 3) -> str:
    """Render :func:`comparison_table` as Markdown cells ``mean ± std`` (``± n/a``: one seed,
    so no spread; ``—``: the metric does not apply)."""
    if table.empty:
        return f"_no results for {metric}_\n"
    keys, benches = _key_columns(table), _benchmarks(table)
    header = "| " + " | ".join(keys) + " | " + " | ".join(benches) + " | seeds |"
    sep = "|" + "---|" * (len(keys) + len(benches) + 1)
    lines = [f"**{metric}** (mean ± sample std over seeds; n/a: a single seed)", "", header, sep]
    for _, row in table.iterrows():
        cells = [_cell(row[b], row[b + "_std"], digits) for b in benches]
        lines.append("| " + " | ".join(str(row[k]) for k in keys) + " | " + " | ".join(cells)
                     + f" | {int(row['seeds'])} |")
    return "\n".join(lines) + "\n"


def ablation_table(summaries: pd.DataFrame, variants: Mapping[str, Mapping],
                   metric: str = "exact_match") -> pd.DataFrame:
    """The selection x clip grid: rows selection, columns clip, cells mean over seeds
    of ``metric`` on the ``all`` benchmark. ``variants`` maps a variant name to its options
    (``{"selection": ..., "clip": ...}``)."""
    overall = summaries[summaries["benchmark"] == "all"] if len(summaries) else summaries
    rows = []
    for name, opts in variants.items():
        vals = overall.loc[overall["variant"] == name, metric] if len(overall) else []
        if len(vals):
            rows.append({"selection": opts.get("selection"), "clip": opts.get("clip"),
                         "mean": float(vals.mean()), "std": spread(vals)})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return df.pivot_table(index="selection", columns="clip", values="mean").reset_index()


def ablation_markdown(summaries: pd.DataFrame, grid: Mapping[str, Mapping],
                      metric: str = "exact_match", digits: int = 3) -> str:
    """The ablation ``grid`` (variant -> ``{"selection", "clip"}``) as a Markdown table,
    rows selection, columns clip: ``mean ± std`` of ``metric`` on ``all`` over seeds where
    the run is in ``summaries``, else ``not run (`<variant>`)``, so a report without the
    ablation still shows which run fills which cell."""
    overall = summaries[summaries["benchmark"] == "all"] if len(summaries) else summaries
    selections = list(dict.fromkeys(str(o.get("selection")) for o in grid.values()))
    clips = list(dict.fromkeys(str(o.get("clip")) for o in grid.values()))
    cells: dict[tuple[str, str], str] = {}
    for name, opts in grid.items():
        vals = (overall.loc[overall["variant"] == name, metric].dropna() if len(overall)
                else pd.Series(dtype=float))
        cells[(str(opts.get("selection")), str(opts.get("clip")))] = (
            f"{_cell(vals.mean(), spread(vals), digits)} ({vals.count()} seed"
            f"{'s' if vals.count() > 1 else ''})" if len(vals)
            else f"not run (`{name}`)")
    lines = ["| selection \\ clip | " + " | ".join(clips) + " |", "|" + "---|" * (len(clips) + 1)]
    lines += [f"| {s} | " + " | ".join(cells.get((s, c), "—") for c in clips) + " |"
              for s in selections]
    return "\n".join(lines) + "\n"


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


@dataclass(frozen=True)
class Panel:
    """One training-curve panel: the history column it draws and how its axes read."""

    key: str
    title: str
    ylabel: str
    bounds: Bounds = (None, None)
    source: str = "rl"  # which history holds the column: "rl" (per variant) or "sft" (shared)
    xlabel: str = "RL step"


#: The reward panels: the shaped reward, the same rollouts without the PRS curriculum, its
#: components, and the held-out validation (docs/metrics.md, ``rl/...``).
REWARD_PANELS = (
    Panel("reward/mean", "shaped reward", "reward per trajectory [0, 1]", UNIT),
    Panel("reward/unscheduled", "schedule-free reward", "reward, PRS schedule done [0, 1]", UNIT),
    Panel("reward/format", "format component", "format reward paid [0, 1]", UNIT),
    Panel("reward/quality", "answer quality S", "quality S [0, 1]", UNIT),
    Panel("reward/exact_match", "rollout exact match", "exact match [0, 1]", UNIT),
    # Validation rows hold the figure *after* that step's update (step -1: before RL).
    Panel("val/exact_match", "validation exact match", "exact match [0, 1]", UNIT,
          xlabel="RL updates done"),
)

#: What the policy does while it learns, and the SFT warm start it learns from.
TRAINING_PANELS = (
    # The true KL is >= 0; the band is clipped there (the k1 estimate itself may dip below).
    Panel("actor/kl", "KL to the reference", "KL per token (nats)", NON_NEGATIVE),
    Panel("actor/entropy", "policy entropy", "entropy per token (nats)", NON_NEGATIVE),
    Panel("rollout/generated_tokens_mean", "response length",
          "sampled tokens per trajectory", NON_NEGATIVE),
    Panel("rollout/tool_calls_mean", "tool calls", "tool calls per trajectory", NON_NEGATIVE),
    Panel("sft/loss", "SFT loss", "assistant-token loss (nats/token)", NON_NEGATIVE,
          source="sft", xlabel="SFT step"),
)

ZERO_ADVANTAGE_PANEL = Panel("vspo/zero_adv_frac", "zero-advantage groups (before VSPO)",
                             "fraction of groups [0, 1]", UNIT)


def seed_curves(history: pd.DataFrame, panel: Panel) -> dict[str, pd.DataFrame]:
    """Per variant, the panel's curve: one row per step with ``mean``, ``low``, ``high``
    (mean ± sample std over seeds, clipped to ``panel.bounds``; NaN with a single seed) and
    ``seeds``. Variants without the metric are left out."""
    out: dict[str, pd.DataFrame] = {}
    if history.empty or panel.key not in history.columns:
        return out
    for variant, group in history.groupby("variant", sort=False):
        group = group[group[panel.key].notna()]
        if group.empty:
            continue
        steps = group["step"] + 1 if panel.key.startswith("val/") else group["step"]
        per_step = group[panel.key].groupby(steps.to_numpy())
        mean = per_step.mean()
        std = per_step.agg(spread)
        out[str(variant)] = pd.DataFrame({
            "mean": mean, "low": clip_to(mean - std, panel.bounds),
            "high": clip_to(mean + std, panel.bounds), "seeds": per_step.size()},
            index=mean.index.rename("step"))
    return out


def _colors(names: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _keep_in_range(ax, bounds: Bounds) -> None:
    """Autoscaled y limits, cut where the metric cannot go (a flat curve at 0 of a rate is
    not drawn in an axis that reaches -0.05); a 2 % margin keeps a line off the frame."""
    low, high = ax.get_ylim()
    span = high - low
    if bounds[0] is not None:
        low = max(low, bounds[0] - 0.02 * span)
    if bounds[1] is not None:
        high = min(high, bounds[1] + 0.02 * span)
    ax.set_ylim(low, high)


def curves_figure(histories: Mapping[str, pd.DataFrame], panels: Sequence[Panel],
                  title: str | None = None) -> plt.Figure:
    """One panel per entry of ``panels`` whose metric some run logged (the others are
    omitted, not drawn empty); a line per variant, band = seed spread (none for one seed).
    ``histories`` maps a :attr:`Panel.source` to its history frame."""
    drawn = [(p, c) for p in panels
             if (c := seed_curves(histories.get(p.source, pd.DataFrame()), p))]
    ncols = min(3, max(len(drawn), 1))
    nrows = max(1, math.ceil(len(drawn) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.6),
                             squeeze=False)
    flat = list(axes.flat)
    colors = _colors(list(dict.fromkeys(v for _, curves in drawn for v in curves)))
    for ax, (panel, curves) in zip(flat, drawn):
        for variant, curve in curves.items():
            ax.plot(curve.index, curve["mean"], label=variant, color=colors[variant])
            band = curve["low"].notna() & curve["high"].notna()
            if band.any():
                ax.fill_between(curve.index[band], curve["low"][band], curve["high"][band],
                                color=colors[variant], alpha=0.15)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        _keep_in_range(ax, panel.bounds)
        ax.grid(alpha=0.3)
    for ax in flat[len(drawn):]:
        ax.set_axis_off()
    if not drawn:
        flat[0].text(0.5, 0.5, "no training history in this report", ha="center",
                     va="center", transform=flat[0].transAxes)
    if colors:
        handles = [plt.Line2D([], [], color=c, label=v) for v, c in colors.items()]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7,
                   frameon=False)
    if title:
        fig.suptitle(title + ("" if not drawn else " (band: ± std over seeds)"), fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if colors else 0, 1, 1))
    return fig


def reward_curves_figure(histories: pd.DataFrame) -> plt.Figure:
    """Reward, the schedule-free reward, its components and validation per RL step."""
    return curves_figure({"rl": histories}, REWARD_PANELS, "Reward per RL step")


def training_curves_figure(histories: pd.DataFrame,
                           sft_history: pd.DataFrame | None = None) -> plt.Figure:
    """KL, entropy, response length and tool calls per RL step, and the SFT loss."""
    return curves_figure({"rl": histories, "sft": sft_history if sft_history is not None
                          else pd.DataFrame()}, TRAINING_PANELS, "Training diagnostics")


def zero_advantage_figure(histories: pd.DataFrame) -> plt.Figure:
    """Fraction of zero-advantage groups per step (before VSPO replacement)."""
    return curves_figure({"rl": histories}, (ZERO_ADVANTAGE_PANEL,))


def _label(row: pd.Series, keys: Sequence[str]) -> str:
    return " · ".join(str(row[k]) for k in keys)


def eval_bars_figure(summaries: pd.DataFrame, metric: str = "exact_match",
                     gains: pd.DataFrame | None = None, baseline: str = "sft_only",
                     by: Sequence[str] = ("variant",),
                     variant_order: Sequence[str] | None = None) -> plt.Figure:
    """Grouped bars of ``metric``: benchmark x variant.

    Error bars: with ``gains`` (:func:`paired_gains`), each run's paired 95 % bootstrap
    interval of its gain over ``baseline``, placed on its bar (the baseline has none), and a
    second panel draws the gains themselves; without, the std over seeds where there are
    several. Intervals are clipped to the metric's range ([0, 1]; gains [-1, 1])."""
    table = comparison_table(summaries, metric, variant_order, by=by)
    label, bounds = metric_axis(metric)
    part = (gains[gains["metric"] == metric] if gains is not None and len(gains)
            else pd.DataFrame(columns=GAIN_COLUMNS))
    paired = not part.empty
    benches = _benchmarks(table) if not table.empty else []
    # the gains panel under the bars: the same benchmarks, on the same x positions
    fig, axes = plt.subplots(2 if paired else 1, 1, squeeze=False,
                             figsize=(max(6.0, 0.3 * len(benches) * max(len(table), 1) + 1.5),
                                      3.8 * (2 if paired else 1)))
    ax = axes[0][0]
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(benches))
    keys = _key_columns(table)
    # One colour per run in both panels (the gains panel shows the same runs less the baseline).
    colors = _colors([_label(row, keys) for _, row in table.iterrows()])
    interval = part.set_index(["variant", "benchmark"]) if paired else None
    for i, (_, row) in enumerate(table.iterrows()):
        heights = np.array([row[b] for b in benches], dtype=float)
        if paired:
            # The gain's interval, shifted onto the bar: the baseline's bar lies outside it
            # exactly when the interval excludes a zero gain.
            shift = [_interval(interval, row["variant"], b) for b in benches]
            low = heights + np.array([lo for lo, _ in shift], float)
            high = heights + np.array([hi for _, hi in shift], float)
        else:
            std = np.array([row[b + "_std"] for b in benches], dtype=float)
            low, high = heights - std, heights + std
        ax.bar(x + i * width, heights, width, label=_label(row, keys), capsize=2,
               yerr=error_bar(heights, low, high, bounds), color=colors[_label(row, keys)])
    ax.set_xticks(x + width * (len(table) - 1) / 2, benches, rotation=20, fontsize=8)
    ax.set_xlabel("benchmark")
    ax.set_ylabel(label)
    ax.set_title(f"error bars: paired 95 % bootstrap interval vs {baseline}" if paired
                 else "error bars: ± std over seeds (none for one seed)", fontsize=8)
    if bounds == UNIT:
        ax.set_ylim(0, 1.05)
    if len(table):
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, f"no evaluation results for {metric}", ha="center", va="center",
                transform=ax.transAxes)
    ax.grid(axis="y", alpha=0.3)
    if paired:
        _gains_panel(axes[1][0], part, benches, metric, baseline, colors)
    fig.tight_layout()
    return fig


def _interval(gains: pd.DataFrame, variant: str, benchmark: str) -> tuple[float, float]:
    """``(ci_low - gain, ci_high - gain)`` of a row of ``gains`` indexed (variant, benchmark);
    NaN when the run has no paired row (the baseline itself)."""
    if (variant, benchmark) not in gains.index:
        return (math.nan, math.nan)
    row = gains.loc[(variant, benchmark)]
    return (float(row["ci_low"] - row["gain"]), float(row["ci_high"] - row["gain"]))


def _gains_panel(ax, gains: pd.DataFrame, benches: Sequence[str], metric: str,
                 baseline: str, colors: Mapping[str, str]) -> None:
    """Bars of each run's paired gain over ``baseline`` with its bootstrap interval."""
    label, bounds = metric_axis(metric)
    gbounds = gain_bounds(bounds)
    variants = list(dict.fromkeys(gains["variant"]))
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(benches))
    by_key = gains.set_index(["variant", "benchmark"])
    for i, variant in enumerate(variants):
        rows = [by_key.loc[(variant, b)] if (variant, b) in by_key.index else None
                for b in benches]
        gain = np.array([r["gain"] if r is not None else np.nan for r in rows], float)
        low = np.array([r["ci_low"] if r is not None else np.nan for r in rows], float)
        high = np.array([r["ci_high"] if r is not None else np.nan for r in rows], float)
        ax.bar(x + i * width, np.nan_to_num(gain), width, label=variant, capsize=2,
               yerr=error_bar(np.nan_to_num(gain), low, high, gbounds),
               color=colors.get(variant))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x + width * (len(variants) - 1) / 2, benches, rotation=20, fontsize=8)
    ax.set_xlabel("benchmark")
    span = "" if gbounds == (None, None) else f" [{gbounds[0]:g}, {gbounds[1]:g}]"
    ax.set_ylabel(f"gain in {label.split(' [')[0]} over {baseline}{span}")
    ax.set_title("paired gain over questions, 95 % bootstrap interval", fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)


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
