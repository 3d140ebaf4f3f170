"""The report's figures: each function takes plain numbers and returns a matplotlib `Figure`;
`data_uri` turns one into the `data:image/png;base64,...` the HTML embeds.

A bare `Figure` renders with Agg (as study/retrieval_grid.py does): no pyplot, so no global figure
state and no display, and figures can be built from any thread.
"""
from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ParamSpec

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["Curve", "Interval", "breakdown_figure", "cost_figure", "curves_figure", "data_uri",
           "gap_figure", "importance_figure", "interval_figure", "recall_at_k_figure"]

P = ParamSpec("P")

WIDTH = 9.0  # inches; at DPI (990 pixels) the figures fill the report's column
DPI = 110
ROW = 0.28  # inches per labelled row of a horizontal chart
LABEL_CHARS = 60  # longer labels are cut in figures (the tables carry them whole)
ACCENT, MUTED, BASE = "#c0392b", "#7f8c8d", "#2c3e50"  # best or significant / baselines / the rest
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_RC = {"font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 8,
       "ytick.labelsize": 8, "legend.fontsize": 7.5, "axes.spines.top": False, "axes.spines.right": False}


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "\u2026"


def _styled(plot: Callable[P, Figure]) -> Callable[P, Figure]:
    """Run a plot function under the report's rc settings (read as artists are made), leaving the
    process-wide ones as they were."""
    @functools.wraps(plot)
    def styled(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context(_RC):
            return plot(*args, **kwargs)
    return styled


def _figure(height: float, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, max(height, 1.6)), dpi=DPI, layout="constrained")


def _axes(figure: Figure, *args, **kwargs):
    axis = figure.add_subplot(*args, **kwargs)
    axis.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    axis.set_axisbelow(True)
    return axis


def data_uri(figure: Figure) -> str:
    """The figure as a base64 PNG data URI (no metadata that changes from run to run)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):  # tick labels made while drawing take the report's sizes too
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Interval:
    """A value with its 95% interval; low/high None when the study has none for it."""

    mean: float
    low: float | None = None
    high: float | None = None


@_styled
def interval_figure(labels: Sequence[str], series: Mapping[str, Sequence[Interval | None]], *,
                    xlabel: str, colors: Sequence[str] | None = None, reference: float | None = None) -> Figure:
    """Rows top to bottom in `labels` order, one marker per series (a forest plot when `reference`
    is 0). The first series is the main one, drawn in `colors` (one per row: best, baselines,
    significant) or dark; further series (per-dataset parts) sit below it, one colour each, thinner."""
    n, names = len(labels), list(series)
    figure = _figure(0.9 + ROW * n * (1 if len(names) == 1 else 0.6 + 0.4 * len(names)))
    axis = _axes(figure, 1, 1, 1)
    y = np.arange(n)[::-1].astype(float)
    step = 0.8 / len(names)
    handles = []
    for s, name in enumerate(names):
        offset = (len(names) - 1) / 2 * step - s * step
        main = s == 0
        for row, value in enumerate(series[name]):
            if value is None or not math.isfinite(value.mean):
                continue
            color = (colors[row] if colors is not None else BASE) if main else PALETTE[(s - 1) % len(PALETTE)]
            has_interval = value.low is not None and math.isfinite(value.low)
            if has_interval:
                axis.plot([value.low, value.high], [y[row] + offset] * 2, color=color, linewidth=1.8 if main else 1.1,
                          solid_capstyle="butt", alpha=1.0 if main else 0.8)
            axis.plot(value.mean, y[row] + offset, "o" if has_interval else "x", color=color,
                      markersize=5.5 if main else 3.5)
        handles.append(Line2D([], [], color=BASE if main else PALETTE[(s - 1) % len(PALETTE)], marker="o",
                              markersize=5.5 if main else 3.5, linewidth=1.8 if main else 1.1, label=name))
    if reference is not None:
        axis.axvline(reference, color="#555555", linewidth=0.8, linestyle="--")
    axis.set_yticks(y, [_short(label) for label in labels])
    axis.set_ylim(-0.7, n - 0.3)
    axis.set_xlabel(xlabel)
    if len(names) > 1:
        figure.legend(handles=handles, loc="outside upper right", frameon=False, ncols=len(names))
    return figure


@_styled
def importance_figure(by_composer: Mapping[str, Mapping[str, tuple[float, float]]]) -> Figure:
    """One panel per composer: each hyperparameter's (fANOVA, PED-ANOVA) share as paired bars with
    their values; a missing number (NaN: fANOVA of a conditional parameter) says n/a."""
    composers = list(by_composer)
    rows = sum(max(len(v), 1) for v in by_composer.values())
    figure = _figure(0.7 * len(composers) + ROW * 1.4 * rows)
    grid = figure.add_gridspec(len(composers), 1, height_ratios=[max(len(by_composer[c]), 1) + 1 for c in composers])
    for i, composer in enumerate(composers):
        axis = _axes(figure, grid[i])
        params = list(by_composer[composer])
        y = np.arange(len(params))[::-1].astype(float)
        for j, (name, color) in enumerate((("fANOVA", PALETTE[0]), ("PED-ANOVA", PALETTE[1]))):
            values = np.array([by_composer[composer][p][j] for p in params], dtype=float)
            keep = np.isfinite(values)
            at = y + (0.2 if j == 0 else -0.2)
            axis.barh(at[keep], values[keep], height=0.38, color=color, label=name if i == 0 else None)
            for where, value in zip(at, values):  # a zero and a missing number must not look alike
                axis.text(value + 0.01 if np.isfinite(value) else 0.01, where,
                          f"{value:.2f}" if np.isfinite(value) else "n/a", va="center", fontsize=7, color="#44505c")
        axis.set_yticks(y, [_short(p) for p in params])
        axis.set_xlim(0, 1.08)  # room for the value beside a bar of 1
        axis.set_title(f"composer: {composer}", loc="left")
        if i == len(composers) - 1:
            axis.set_xlabel("share of the seed-mean WHM's variation explained")
    figure.legend(loc="outside upper right", frameon=False, ncols=2)
    return figure


@_styled
def gap_figure(labels: Sequence[str], gaps: Mapping[int, Sequence[float]], *, dataset: str) -> Figure:
    """Train minus test recall per configuration (rows) at each K (one colour per K)."""
    n = len(labels)
    figure = _figure(1.0 + ROW * n)
    axis = _axes(figure, 1, 1, 1)
    y = np.arange(n)[::-1].astype(float)
    for i, (k, values) in enumerate(sorted(gaps.items())):
        axis.plot(np.asarray(values, dtype=float), y, "o", color=PALETTE[i % len(PALETTE)], markersize=4.5,
                  label=f"K={k}", alpha=0.9)
    axis.axvline(0.0, color="#555555", linewidth=0.8, linestyle="--")
    axis.set_yticks(y, [_short(label) for label in labels])
    axis.set_ylim(-0.7, n - 0.3)
    axis.set_xlabel(f"{dataset}: train recall@K \u2212 test recall@K (seed mean; > 0: better on seen queries)")
    figure.legend(loc="outside upper right", frameon=False, ncols=min(len(gaps), 6))
    return figure


@dataclass(frozen=True)
class Curve:
    """One configuration over epochs: the seed mean and each seed."""

    label: str
    epochs: Sequence[int]
    mean: Sequence[float]
    seeds: Mapping[int, tuple[Sequence[int], Sequence[float]]]
    scored: int | None = None  # the epoch its ranking score was read at


@_styled
def curves_figure(panels: Mapping[str, Sequence[Curve]]) -> Figure:
    """One panel per quantity (the WHM, each dataset's training loss), one colour per configuration:
    the seed mean thick, each seed thin, the scored epoch ringed."""
    names = list(panels)
    columns = min(len(names), 2)
    rows = math.ceil(len(names) / columns)
    figure = _figure(2.6 * rows)
    handles = {}
    for p, name in enumerate(names):
        axis = _axes(figure, rows, columns, p + 1)
        axis.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        for c, curve in enumerate(panels[name]):
            color = PALETTE[c % len(PALETTE)]
            for epochs, values in curve.seeds.values():
                axis.plot(epochs, values, color=color, linewidth=0.7, alpha=0.35)
            (line,) = axis.plot(curve.epochs, curve.mean, color=color, linewidth=2.0, marker="o", markersize=3)
            handles.setdefault(curve.label, line)
            if curve.scored in list(curve.epochs):
                at = list(curve.epochs).index(curve.scored)
                axis.plot(curve.scored, curve.mean[at], "o", markersize=9, markerfacecolor="none",
                          markeredgecolor=color, markeredgewidth=1.2)
        axis.set_title(name, loc="left")
        axis.set_xlabel("epoch")
        epochs = sorted({e for curve in panels[name] for e in curve.epochs})
        if epochs and len(epochs) <= 12:
            axis.set_xticks(epochs)
    figure.legend(list(handles.values()), [_short(label) for label in handles], loc="outside lower center",
                  ncols=min(len(handles), 2), frameon=False)
    return figure


@_styled
def recall_at_k_figure(ks: Sequence[int], lines: Mapping[str, Sequence[float]], *, dataset: str,
                       emphasis: Sequence[str] = ()) -> Figure:
    """Test recall against K (log axis), one line per configuration; `emphasis` drawn thicker."""
    figure = _figure(2.9)
    axis = _axes(figure, 1, 1, 1)
    axis.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    for i, (label, values) in enumerate(lines.items()):
        axis.plot(ks, values, marker="o", markersize=3.5, color=PALETTE[i % len(PALETTE)],
                  linewidth=2.2 if label in emphasis else 1.1, label=_short(label))
    axis.set_xscale("log")
    axis.set_xticks(list(ks), [str(k) for k in ks])
    axis.minorticks_off()
    top = np.nanmax([np.nan, 0.05, *[v for values in lines.values() for v in values]])
    axis.set_ylim(0, min(1.0, float(top) * 1.1))
    axis.set_xlabel("K")
    axis.set_ylabel(f"{dataset} test recall@K (seed mean)")
    axis.legend(loc="upper left", frameon=False)
    return figure


@_styled
def breakdown_figure(kinds: Sequence[str], ks: Sequence[int], bars: Mapping[str, np.ndarray], *,
                     dataset: str) -> Figure:
    """One panel per K, a group of bars per kind (modification type or label part), one bar per
    configuration. `bars[label]`: (len(kinds), len(ks)) recalls, NaN where absent."""
    columns = min(len(ks), 4)
    rows = math.ceil(len(ks) / columns)
    figure = _figure(2.2 * rows + 0.4)
    x = np.arange(len(kinds), dtype=float)
    width = 0.8 / max(len(bars), 1)
    top = max([float(np.nanmax(v)) for v in bars.values() if np.isfinite(v).any()] + [0.05])
    for j, k in enumerate(ks):
        axis = _axes(figure, rows, columns, j + 1)
        axis.grid(axis="x", visible=False)
        axis.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        for i, (label, values) in enumerate(bars.items()):
            axis.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(values[:, j]), width=width * 0.95,
                     color=(ACCENT, MUTED, *PALETTE)[i % (2 + len(PALETTE))], label=_short(label) if j == 0 else None)
        axis.set_xticks(x, [kind.replace("_", " ") for kind in kinds], rotation=30 if len(kinds) > 4 else 0,
                        ha="right" if len(kinds) > 4 else "center")
        axis.set_ylim(0, min(1.0, top * 1.15))
        axis.set_title(f"{dataset} test recall@{k}", loc="left")
    figure.legend(loc="outside lower center", ncols=max(len(bars), 1), frameon=False)
    return figure


@_styled
def cost_figure(labels: Sequence[str], columns: Mapping[str, Sequence[float]]) -> Figure:
    """One horizontal bar panel per measure (`columns[name]`: seconds per row), configurations as
    rows; each axis in s, min or h."""
    names = list(columns)
    n = len(labels)
    figure = _figure(1.0 + ROW * n)
    y = np.arange(n)[::-1].astype(float)
    grid = figure.add_gridspec(1, len(names), width_ratios=[2.2] + [1] * (len(names) - 1))
    for i, name in enumerate(names):
        axis = _axes(figure, grid[i])
        values = np.asarray(columns[name], dtype=float)
        scale, unit = _time_unit(float(np.nanmax(values, initial=0.0)))
        axis.barh(y, values / scale, height=0.6, color=PALETTE[i % len(PALETTE)])
        axis.set_ylim(-0.7, n - 0.3)
        if i == 0:
            axis.set_yticks(y, [_short(label) for label in labels])
        else:
            axis.set_yticks(y, [""] * n)
        axis.set_xlabel(f"{name} ({unit})")
    return figure


def _time_unit(largest_seconds: float) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the axis numbers readable."""
    if largest_seconds >= 3 * 3600:
        return 3600.0, "h"
    if largest_seconds >= 3 * 60:
        return 60.0, "min"
    return 1.0, "s"
