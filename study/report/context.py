"""What every section of the report shares: the section headings, the study's tables read into a
`Context` (the ranking order, a short label per configuration, seed means), and the formatting of
numbers into table cells and of figures into pictures."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from study.report import plots
from study.report.blocks import Cell, Picture, Row
from study.report.inputs import StudyTables

__all__ = ["ALPHA", "SECTIONS", "TOP_CURVES", "TOP_ROWS", "Context", "fmt_p", "fmt_param", "fmt_seconds", "is_null",
           "num", "number_cell", "number_cells", "picture", "signed", "text_cell"]

SECTIONS = {
    "question": "Question",
    "setup": "Budget and datasets",
    "ranking": "Ranking",
    "gains": "Gains against matched baselines",
    "importance": "Hyperparameter importance",
    "generalisation": "Train vs test recall",
    "curves": "Learning curves",
    "recall": "Recall at every K",
    "breakdowns": "Breakdowns",
    "cost": "Cost",
    "probes": "Probe queries",
    "reconstruction": "Composed features as images",
}
ALPHA = 0.05  # study.ranking.ALPHA; repeated so the report does not import torch
TOP_CURVES = 5  # configurations drawn in the learning curves and recall@K lines
TOP_ROWS = 30  # rows of a horizontal chart (the tables hold every configuration)


def is_null(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def num(value: Any, digits: int = 4, *, signed: bool = False) -> str:
    return "-" if is_null(value) else f"{float(value):{'+' if signed else ''}.{digits}f}"


def fmt_p(value: Any) -> str:
    return "-" if is_null(value) else ("<1e-4" if value < 1e-4 else f"{value:.3g}")


def fmt_param(value: Any) -> str:
    if is_null(value):
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def fmt_seconds(value: Any) -> str:
    if is_null(value):
        return "-"
    s = float(value)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def number_cell(value: Any, key: str, text: str | None = None) -> Cell:
    """A numeric cell: `text` shown, the unrounded value in data-value."""
    if is_null(value):
        plain = None
    elif isinstance(value, (int, np.integer)):
        plain = int(value)
    else:
        plain = float(value) if isinstance(value, (float, np.floating)) else str(value)
    return Cell(text if text is not None else num(value), plain, key, numeric=True)


def signed(value: Any) -> str:
    return num(value, signed=True)


def number_cells(row: Mapping[str, Any], columns: Sequence[tuple[str, Callable[[Any], str]]]) -> list[Cell]:
    """One `number_cell` per (column of `row`, formatter)."""
    return [number_cell(row[key], key, show(row[key])) for key, show in columns]


def text_cell(value: Any) -> Cell:
    return Cell("" if is_null(value) else str(value))


def picture(figure, alt: str) -> Picture:
    return Picture(plots.data_uri(figure), alt)


@dataclass(frozen=True)
class Context:
    """What every section shares: the tables, a short label per configuration, the ranking order."""

    tables: StudyTables
    order: tuple[str, ...]  # finished configurations, best first
    described: Mapping[str, str]  # config id -> its varying hyperparameters, "regularizer=ga, ga_noise=0.001"
    roles: Mapping[str, str]  # config id -> "searched" | "baseline", for every configuration of trials.parquet
    means: pd.DataFrame  # seed means of trials.parquet's numeric columns, index config_id, rank order
    best: str | None
    baseline: str | None  # the best's matched baseline, when it has one that finished

    @classmethod
    def of(cls, tables: StudyTables) -> "Context":
        ranking = tables.ranking
        order = tuple(str(c) for c in ranking["config_id"])
        params = [c for c in tables.trials.columns if c.startswith("param/")]
        by_config = tables.trials.drop_duplicates("config_id").set_index("config_id")
        varying = tuple(c for c in params if by_config[c].map(fmt_param).nunique() > 1)
        described = {str(config_id): ", ".join(f"{c.removeprefix('param/')}={fmt_param(row[c])}" for c in varying
                                               if not is_null(row[c]))
                     for config_id, row in by_config.iterrows()}
        done = tables.done
        numeric = [c for c in done.columns if c not in ("seed", "epoch") and pd.api.types.is_numeric_dtype(done[c])
                   and not c.startswith("param/")]
        means = done.groupby("config_id")[numeric].mean().reindex(list(order))
        best = order[0] if order else None
        baseline = None
        if best is not None:
            candidate = ranking.iloc[0]["baseline_id"]
            if not is_null(candidate) and str(candidate) in order and str(candidate) != best:
                baseline = str(candidate)
        roles = {str(c): str(role) for c, role in by_config["role"].items()} if "role" in by_config else {}
        return cls(tables, order, described, roles, means, best, baseline)

    def label(self, config_id: str, prefix: str | None = None) -> str:
        """"c0003: regularizer=ga, ga_noise=0.001" (`prefix` in place of the id)."""
        text = self.described.get(config_id, "")
        head = config_id if prefix is None else prefix
        return f"{head}: {text}" if text else head

    def shown(self, limit: int = TOP_CURVES) -> list[str]:
        """The top `limit` configurations, and the best's baseline when it is not among them."""
        chosen = list(self.order[:limit])
        if self.baseline is not None and self.baseline not in chosen:
            chosen.append(self.baseline)
        return chosen

    def row(self, config_id: str, cells: Sequence[Cell]) -> Row:
        style = "best" if config_id == self.best else "baseline" if self.roles.get(config_id) == "baseline" else ""
        return Row((Cell(self.label(config_id)), *cells), config=config_id, style=style)


