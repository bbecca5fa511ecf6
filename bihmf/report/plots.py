"""The report's figures, each written as PNG (for the HTML report) and PDF (for a paper).

Every figure shows the seed spread, never a bare mean: bars carry the seeds as dots and a
standard-deviation whisker, learning curves a ±1 sd band, cost points a ±1 sd bar. A figure
without data (partial results, or no struct_only baseline configured) is still written and
says in words what is missing, so the report never silently drops a panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from bihmf.io import atomic_output
from bihmf.models.fusion import reference_fusion
from bihmf.models.model import NO_ENCODER
from bihmf.report.aggregate import column_header, is_test_split, metric_frame, ordered_columns
from bihmf.run import RunRecord
from bihmf.tasks import TASKS
from bihmf.tasks.metrics import higher_is_better

matplotlib.use("Agg")  # report jobs run headless (cluster nodes, CI)

BASELINE = reference_fusion()
PANEL = (3.6, 3.0)  # inches per panel
NO_VALUE = "no value"  # heatmap cell without a finished run, a defined metric or a baseline
LOG_SPAN = 10.0  # a cost axis goes logarithmic once its values span more than a decade


def save_figure(fig: Figure, *paths: Path) -> None:
    """Each path in the format its suffix names (.png for the HTML report, .pdf for a paper), each
    atomically: a killed job leaves no half-written figure."""
    for path in map(Path, paths):
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=path.suffix.removeprefix("."), dpi=150, bbox_inches="tight")


def message_figure(title: str, message: str) -> Figure:
    """A figure that states why there is nothing to plot."""
    fig = Figure(figsize=(6, 2))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    fig.suptitle(title)
    return fig


def _figure_legend(fig: Figure, axes: Sequence, title: str) -> None:
    """One legend for the whole figure, outside the panels so it never covers data."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _orders(rows: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Encoder and fusion orders as the table lists its rows (configured order)."""
    return list(dict.fromkeys(e for e, _ in rows)), list(dict.fromkeys(f for _, f in rows))


def bars_figure(runs: Sequence[RunRecord], rows: Sequence[tuple[str, str]], splits: Sequence[str], dataset: str) -> Figure:
    """Grouped bars per test column: x = fusion, hue = encoder, whisker = sd, dots = seeds.

    Panels follow the tables: a row per test split (configured order), a column per metric
    (the task's natural order).
    """
    long = metric_frame(runs).dropna(subset=["value"])
    long = long[long["split"].map(is_test_split)]
    if long.empty:
        return message_figure(f"{dataset}: test metrics", "no finished run has a test metric yet")
    encoders, fusions = _orders(rows)
    columns = ordered_columns(long, splits)
    metrics = list(dict.fromkeys(m for _, m in columns))
    splits = list(dict.fromkeys(s for s, _ in columns))
    width = max(PANEL[0], 0.45 * len(fusions) + 0.25 * len(encoders))
    fig = Figure(figsize=(width * len(metrics), PANEL[1] * len(splits) + 0.8))
    grid = fig.subplots(len(splits), len(metrics), squeeze=False)
    palette = dict(zip(encoders, sns.color_palette("colorblind", len(encoders))))
    for i, split in enumerate(splits):
        for j, metric in enumerate(metrics):
            ax = grid[i][j]
            data = long[(long["split"] == split) & (long["metric"] == metric)]
            if data.empty:
                ax.axis("off")
                continue
            common = dict(data=data, x="fusion", y="value", hue="encoder", order=fusions, hue_order=encoders, ax=ax)
            sns.barplot(**common, errorbar="sd", palette=palette, alpha=0.8, capsize=0.1, err_kws={"linewidth": 1})
            sns.stripplot(**common, dodge=True, palette=dict.fromkeys(encoders, "black"), size=3, legend=False)
            ax.set_title(column_header(split, metric))
            ax.set_xlabel("")
            ax.set_ylabel(metric)
            ax.tick_params(axis="x", rotation=45)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
    _figure_legend(fig, grid.ravel(), "encoder")
    fig.suptitle(f"{dataset}: test metrics (bar: mean over seeds, whisker: sd, dots: seeds)")
    fig.tight_layout()
    return fig


def relative_gain(summary: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Encoder × fusion gain over the same encoder's struct_only run, in percent of it.

    Signed so that positive is better whatever the metric's direction (an RMSE drop is a
    gain). seq_only (encoder ``none``) is compared with each encoder's struct_only: it answers
    "what if this encoder were replaced by the language model alone". NaN = not computable.
    """
    cells = summary[(summary["split"] == split) & (summary["metric"] == metric) & (summary["status"] == "ok")]
    means = cells.set_index(["encoder", "fusion"])["mean"]
    encoders = [e for e in dict.fromkeys(summary["encoder"]) if e != NO_ENCODER]
    fusions = [f for f in dict.fromkeys(summary["fusion"]) if f != BASELINE]
    sign = 1.0 if higher_is_better(metric) else -1.0
    gain = pd.DataFrame(np.nan, index=pd.Index(encoders, name="encoder"), columns=pd.Index(fusions, name="fusion"))
    for encoder in encoders:
        base = means.get((encoder, BASELINE), np.nan)
        if not np.isfinite(base) or base == 0:
            continue
        for fusion in fusions:
            value = means.get((encoder, fusion), means.get((NO_ENCODER, fusion), np.nan))
            gain.loc[encoder, fusion] = sign * (value - base) / abs(base) * 100.0
    return gain


def heatmap_figure(summary: pd.DataFrame, task: str, dataset: str) -> Figure:
    """Heatmap of :func:`relative_gain` on the test split for the task's selection metric."""
    metric = TASKS[task].SELECTION_METRIC
    title = f"{dataset}: test {metric}, gain over {BASELINE} of the same encoder"
    if summary.empty:
        return message_figure(title, "no finished runs yet")
    gain = relative_gain(summary, metric)
    if gain.empty or gain.isna().all().all():
        return message_figure(title, f"nothing to compare: needs a finished {BASELINE} run and another fusion per encoder")
    labels = gain.map(lambda v: "" if np.isnan(v) else f"{v:+.1f}%")
    fig = Figure(figsize=(1.6 + 0.95 * gain.shape[1], max(3.0, 1.8 + 0.5 * gain.shape[0])))
    ax = fig.subplots()
    limit = float(np.nanmax(np.abs(gain.to_numpy()))) or 1.0
    # symmetric limits centre the diverging map on 0; seaborn's own `center` would resample the
    # map through a call matplotlib deprecates (a warning in every report job)
    sns.heatmap(gain, annot=labels, fmt="", cmap="vlag_r", vmin=-limit, vmax=limit, linewidths=0.5,
                cbar_kws={"label": "relative gain (%)"}, ax=ax)
    ax.set_facecolor("0.85")  # seaborn masks NaN cells (and their labels): grey, labelled here
    for i, j in zip(*np.nonzero(np.isnan(gain.to_numpy()))):
        ax.text(j + 0.5, i + 0.5, NO_VALUE, ha="center", va="center", fontsize="small")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return fig


def read_curves(runs: Sequence[RunRecord], curve_paths: dict[tuple[str, str, int], Path]) -> pd.DataFrame:
    """All runs' ``curve.csv`` in one long frame (encoder, fusion, seed, epoch, quantity, value)."""
    frames = []
    for run in runs:
        path = curve_paths[run.key]
        curve = pd.read_csv(path)
        if "epoch" not in curve.columns or "train_loss" not in curve.columns:
            raise ValueError(f"{path}: a learning curve needs columns 'epoch' and 'train_loss'")
        long = curve.drop(columns="seconds", errors="ignore").melt(id_vars="epoch", var_name="quantity", value_name="value")
        frames.append(long.assign(encoder=run.encoder, fusion=run.fusion, seed=run.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "quantity", "value", "encoder", "fusion", "seed"])


def curves_figure(curves: pd.DataFrame, rows: Sequence[tuple[str, str]], task: str, dataset: str) -> Figure:
    """Training loss and the validation selection metric per epoch; a panel column per encoder."""
    quantities = ["train_loss", f"val_{TASKS[task].SELECTION_METRIC}"]
    data = curves[curves["quantity"].isin(quantities)].dropna(subset=["value"])
    if data.empty:
        return message_figure(f"{dataset}: learning curves", "no finished run has a learning curve yet")
    encoders, fusions = _orders(rows)
    encoders = [e for e in encoders if e in set(data["encoder"])]
    fig = Figure(figsize=(PANEL[0] * len(encoders) + 0.5, PANEL[1] * len(quantities)))
    grid = fig.subplots(len(quantities), len(encoders), squeeze=False, sharex="col", sharey="row")
    palette = dict(zip(fusions, sns.color_palette("tab10", len(fusions))))
    for i, quantity in enumerate(quantities):
        for j, encoder in enumerate(encoders):
            ax = grid[i][j]
            panel = data[(data["quantity"] == quantity) & (data["encoder"] == encoder)]
            if not panel.empty:
                sns.lineplot(data=panel, x="epoch", y="value", hue="fusion", hue_order=[f for f in fusions if f in set(panel["fusion"])],
                             palette=palette, errorbar="sd", ax=ax)
            ax.set_title(f"encoder: {encoder}" if i == 0 else "")
            ax.set_ylabel(quantity.replace("_", " ") if j == 0 else "")
            ax.grid(alpha=0.3)
    _figure_legend(fig, grid.ravel(), "fusion")
    fig.suptitle(f"{dataset}: learning curves (line: mean over seeds, band: sd)")
    fig.tight_layout()
    return fig


COST_AXES = (
    ("parameters", "trainable parameters", True),
    ("compute_hours", None, True),
    ("esm_cache_mib_read", "ESM cache read (MiB)", False),
)


def cost_figure(costs: pd.DataFrame, runs: Sequence[RunRecord], rows: Sequence[tuple[str, str]], task: str, dataset: str) -> Figure:
    """Test selection metric against each cost axis; a point per encoder × fusion, bars = sd."""
    metric = TASKS[task].SELECTION_METRIC
    long = metric_frame(runs)
    scores = long[(long["split"] == "test") & (long["metric"] == metric)][["encoder", "fusion", "seed", "value"]]
    data = costs.merge(scores, on=["encoder", "fusion", "seed"]).dropna(subset=["value"]) if len(costs) else costs
    if data.empty:
        return message_figure(f"{dataset}: cost vs test {metric}", "no finished run has a test score yet")
    encoders, fusions = _orders(rows)
    units = sorted(set(data["compute_unit"]))
    compute_label = units[0] if len(units) == 1 else "GPU- or CPU-hours (see runs table)"
    fig = Figure(figsize=(PANEL[0] * len(COST_AXES) + 1.0, PANEL[1] + 0.6))
    axes = fig.subplots(1, len(COST_AXES), sharey=True)
    palette = dict(zip(fusions, sns.color_palette("tab10", len(fusions))))
    points = data.groupby(["encoder", "fusion"], sort=False).agg(
        **{col: (col, "mean") for col, _, _ in COST_AXES}, score=("value", "mean"), score_sd=("value", "std"),
    ).reset_index()
    for ax, (column, label, log) in zip(axes, COST_AXES):
        valid = points.dropna(subset=[column])
        if valid.empty:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.errorbar(valid[column], valid["score"], yerr=valid["score_sd"].fillna(0.0), fmt="none", ecolor="0.5", elinewidth=1)
            sns.scatterplot(data=valid, x=column, y="score", hue="fusion", style="encoder", hue_order=fusions,
                            style_order=encoders, palette=palette, s=60, ax=ax)
            if log and (valid[column] > 0).all() and valid[column].max() > LOG_SPAN * valid[column].min():
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4))
        ax.set_xlabel(label or compute_label)
        ax.set_ylabel(f"test {metric} {'↑' if higher_is_better(metric) else '↓'}")
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes, "")
    fig.suptitle(f"{dataset}: cost vs test {metric} (point: mean over seeds, bar: sd)")
    fig.tight_layout()
    return fig



def ablation_figure(points: pd.DataFrame, variants: Sequence[str], sizes: dict[str, int] | None, title: str) -> Figure:
    """An ablation's headline test metric per variant: a panel per dataset × encoder, a line per
    fusion, points = mean over seeds, error bars = sd.

    ``points`` has one row per run (dataset, encoder, fusion, variant, metric, value). With
    ``sizes`` (variant -> ESM-2 parameter count, given when the variants differ by ESM model
    alone) x is the parameter count on a log axis, so the lines read as scaling curves;
    otherwise x lists the variants in ``variants`` order as unconnected points (categories have no
    order to draw a line along), fusions dodged so bars do not overlap.
    """
    data = points.dropna(subset=["value"])
    if data.empty:
        return message_figure(title, "no finished run has a test score yet")
    panels = list(dict.fromkeys(zip(data["dataset"], data["encoder"])))
    fusions = list(dict.fromkeys(data["fusion"]))
    shown = [v for v in variants if v in set(data["variant"])]
    position = {v: float(sizes[v]) for v in shown} if sizes else {v: float(i) for i, v in enumerate(shown)}
    palette = dict(zip(fusions, sns.color_palette("tab10", len(fusions))))
    fig = Figure(figsize=(max(PANEL[0], 0.7 * len(shown) + 1.5) * len(panels) + 1.0, PANEL[1] + 0.9))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (dataset, encoder) in zip(axes, panels):
        panel = data[(data["dataset"] == dataset) & (data["encoder"] == encoder)]
        for k, fusion in enumerate(fusions):
            cells = panel[panel["fusion"] == fusion].groupby("variant")["value"].agg(["mean", "std"])
            cells = cells.loc[[v for v in shown if v in cells.index]]
            if cells.empty:
                continue
            x = np.array([position[v] for v in cells.index])
            if not sizes:
                x = x + 0.08 * (k - (len(fusions) - 1) / 2)
            order = np.argsort(x)
            ax.errorbar(x[order], cells["mean"].to_numpy()[order], yerr=cells["std"].fillna(0.0).to_numpy()[order],
                        marker="o", capsize=3, color=palette[fusion], label=fusion, linestyle="-" if sizes else "none")
        metric = str(panel["metric"].iloc[0])
        if sizes:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ticks = sorted(shown, key=position.__getitem__)
            ax.set_xticks([position[v] for v in ticks], [f"{v}\n{sizes[v] / 1e6:.3g}M" for v in ticks])
            ax.set_xlabel("ESM-2 parameters (log scale)")
        else:
            ax.set_xticks(range(len(shown)), shown, rotation=45, ha="right")
            ax.set_xlabel("variant")
        ax.set_ylabel(f"test {metric} {'↑' if higher_is_better(metric) else '↓'}")
        ax.set_title(f"{dataset}, encoder {encoder}", fontsize="medium")
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes, "fusion")
    fig.suptitle(f"{title} (point: mean over seeds, bar: sd)")
    fig.tight_layout()
    return fig
