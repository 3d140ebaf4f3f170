"""The report's sections on recall, per dataset: train vs test recall and the generalisation gap,
learning curves of the top configurations, test recall at every K, and the breakdowns (per
modification type; adjective-only / noun-only). Seed means of the per-seed rows, nothing
re-estimated."""
from __future__ import annotations

import numpy as np

from study.report import plots
from study.report.blocks import Section, Subheading, Table, Text
from study.report.context import SECTIONS, TOP_CURVES, TOP_ROWS, Context, is_null, num, number_cell, picture
from study.report.inputs import column_cells

__all__ = ["breakdowns", "curves", "generalisation", "recall"]


def _ks(context: Context, dataset: str, split: str) -> list[int]:
    cells = column_cells(context.means, "recall").values()
    return sorted({c["k"] for c in cells if c["dataset"] == dataset and c["split"] == split})


def _nothing_ranked(section_id: str) -> Section:
    return Section(section_id, SECTIONS[section_id], (Text("No configuration has finished: nothing to show.",
                                                           note=True),))


def generalisation(context: Context) -> Section:
    if not context.order:
        return _nothing_ranked("generalisation")
    m = context.means
    blocks: list = [Text("Recall on training queries against recall on test queries, seed means at the scored epoch; "
                         "the gap is train minus test (large: the configuration fits what it has seen).")]
    for d in context.tables.datasets:
        blocks.append(Subheading(d))
        ks = [k for k in _ks(context, d, "train") if k in _ks(context, d, "test")]
        if not ks or m[[f"recall/{d}/train@{k}" for k in ks]].isna().all().all():
            blocks.append(Text(f"No train recall for {d}: the budget evaluated no training queries "
                               "(train_eval_queries 0).", note=True))
            continue
        gap = {k: (m[f"gap/{d}@{k}"] if f"gap/{d}@{k}" in m else m[f"recall/{d}/train@{k}"] - m[f"recall/{d}/test@{k}"])
               for k in ks}
        top = list(context.order[:TOP_ROWS])
        blocks.append(picture(plots.gap_figure([context.label(c) for c in top], {k: gap[k][top] for k in ks},
                                                dataset=d), f"{d}: train minus test recall per configuration"))
        headers = ["configuration"] + [f"{what}@{k}" for k in ks for what in ("train", "test", "gap")]
        rows = [context.row(c, [cell for k in ks for cell in (
            number_cell(m.at[c, f"recall/{d}/train@{k}"], f"recall/{d}/train@{k}"),
            number_cell(m.at[c, f"recall/{d}/test@{k}"], f"recall/{d}/test@{k}"),
            number_cell(gap[k][c], f"gap/{d}@{k}", num(gap[k][c], signed=True)))]) for c in context.order]
        blocks.append(Table(tuple(headers), tuple(rows), id=f"generalisation-{d}"))
    return Section("generalisation", SECTIONS["generalisation"], tuple(blocks))


def curves(context: Context) -> Section:
    if not context.order:
        return _nothing_ranked("curves")
    history = context.tables.history
    if history is None or history.empty:
        return Section("curves", SECTIONS["curves"], (Text("No history.parquet: no learning curves.", note=True),))
    chosen = context.shown()
    scored = context.tables.ranking.set_index("config_id")["epoch"]
    quantities = {}
    if "whm" in history:
        quantities["test WHM (the score)"] = "whm"
    for d in context.tables.datasets:
        if f"train/{d}/loss/total" in history:
            quantities[f"{d}: training loss"] = f"train/{d}/loss/total"
    panels = {}
    for name, column in quantities.items():
        found = []
        for c in chosen:
            part = history[(history["config_id"] == c) & history[column].notna()].sort_values(["epoch", "seed"])
            if part.empty:
                continue
            mean = part.groupby("epoch")[column].mean()
            seeds = {int(s): (list(p["epoch"]), list(p[column])) for s, p in part.groupby("seed")}
            epoch = scored.get(c)
            found.append(plots.Curve(context.label(c), [int(e) for e in mean.index], list(mean.values), seeds,
                                     None if is_null(epoch) else int(epoch)))
        if found:
            panels[name] = found
    if not panels:
        return Section("curves", SECTIONS["curves"], (Text("history.parquet holds no WHM or loss to draw.",
                                                           note=True),))
    extra = (f" and the best's baseline {context.baseline}"
             if context.baseline is not None and context.baseline not in context.order[:TOP_CURVES] else "")
    return Section("curves", SECTIONS["curves"], (
        Text(f"The top {min(TOP_CURVES, len(context.order))} configurations{extra} "
             "over epochs: the seed mean thick, each seed thin, the epoch the ranking scored ringed."),
        picture(plots.curves_figure(panels), "learning curves of the top configurations")))


def recall(context: Context) -> Section:
    if not context.order:
        return _nothing_ranked("recall")
    m = context.means
    blocks: list = [Text("Test recall at every K each dataset reports, seed means at the scored epoch.")]
    for d in context.tables.datasets:
        ks = _ks(context, d, "test")
        if not ks:
            continue
        blocks.append(Subheading(d))
        lines = {context.label(c): [float(m.at[c, f"recall/{d}/test@{k}"]) for k in ks] for c in context.shown()}
        blocks.append(picture(plots.recall_at_k_figure(ks, lines, dataset=d, emphasis=[context.label(context.best)]),
                               f"{d}: test recall at every K"))
        rows = [context.row(c, [number_cell(m.at[c, f"recall/{d}/test@{k}"], f"recall/{d}/test@{k}") for k in ks])
                for c in context.order]
        blocks.append(Table(("configuration", *[f"R@{k}" for k in ks]), tuple(rows), id=f"recall-{d}"))
    return Section("recall", SECTIONS["recall"], tuple(blocks))


def breakdowns(context: Context) -> Section:
    if not context.order:
        return _nothing_ranked("breakdowns")
    m = context.means
    blocks: list = [Text("Test recall on parts of the queries, seed means: per modification type (CSS add / remove / "
                         "make; per replaced attribute) and, where labels are 'adjective noun', with only the "
                         "adjective or only the noun required to match.")]
    cells = [c for c in column_cells(m, "breakdown").values() if c["split"] == "test"]
    for d in context.tables.datasets:
        mine = [c for c in cells if c["dataset"] == d]
        blocks.append(Subheading(d))
        if not mine:
            blocks.append(Text(f"No breakdowns for {d}: its queries carry no modification types or label parts.",
                               note=True))
            continue
        kinds = list(dict.fromkeys(c["kind"] for c in mine))
        ks = sorted({c["k"] for c in mine})
        if context.best is not None:
            pair = [context.best] + ([context.baseline] if context.baseline else [])
            bars = {context.label(c): np.array([[m.at[c, f"breakdown/{d}/test/{kind}@{k}"]
                                                 if f"breakdown/{d}/test/{kind}@{k}" in m else np.nan for k in ks]
                                                for kind in kinds], dtype=float) for c in pair}
            blocks.append(picture(plots.breakdown_figure(kinds, ks, bars, dataset=d),
                                   f"{d}: breakdowns of the best configuration and its baseline"))
        families = [("modification type", [k for k in kinds if not k.endswith("_only")]),
                    ("label part", [k for k in kinds if k.endswith("_only")])]
        for family, members in families:
            columns = [(kind, k) for kind in members for k in ks if f"breakdown/{d}/test/{kind}@{k}" in m]
            if not columns:
                continue
            keys = [f"breakdown/{d}/test/{kind}@{k}" for kind, k in columns]
            rows = [context.row(c, [number_cell(m.at[c, key], key) for key in keys]) for c in context.order]
            blocks.append(Table(("configuration", *[f"{kind.replace('_', '-')} @{k}" for kind, k in columns]),
                                tuple(rows), id=f"breakdown-{d}-{family.replace(' ', '-')}", caption=family))
    return Section("breakdowns", SECTIONS["breakdowns"], tuple(blocks))
