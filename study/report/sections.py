"""The report's sections on the study as a whole, one builder each (`Context` -> `Section`): the
question, the budget and datasets, the ranking, the gains, the importance and the cost; the
per-dataset recall sections are in `study.report.recalls`, the probe pictures in
`study.report.probes`, the composed features as images in `study.report.reconstruction`. `BUILDERS`
lists all of them in the report's order.

Each builder says in its text what is missing and why (too few configurations for importance, no
matched baseline), so a section is always there, never silently empty.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from study.report import plots
from study.report.blocks import Cell, Facts, Row, Section, Table, Text
from study.report.context import (ALPHA, SECTIONS, TOP_ROWS, Context, fmt_p, fmt_param, fmt_seconds, is_null, num,
                                  number_cell, number_cells, picture, signed, text_cell)
from study.report.inputs import DONE
from study.report.probes import probes
from study.report.reconstruction import reconstruction
from study.report.recalls import breakdowns, curves, generalisation, recall

__all__ = ["BUILDERS", "summary"]


def summary(context: Context) -> str:
    trials = context.tables.trials
    statuses = trials.drop_duplicates("config_id")["status"].value_counts()
    other = ", ".join(f"{n} {s.lower()}" for s, n in statuses.items() if s != DONE)
    line = f"{len(context.order)} configurations ranked" + (f" ({other})" if other else "")
    if context.best is not None:
        best = context.tables.ranking.iloc[0]
        line += f"; best: {context.label(context.best)}, WHM {num(best['whm_mean'])}"
    return line + f"; from {context.tables.directory}"


def question(context: Context) -> Section:
    t = context.tables
    blocks: list = []
    if t.space is not None and t.space.question:
        blocks.append(Text(t.space.question))
    else:
        blocks.append(Text("The space has no leading comment stating its question.", note=True))
    if t.space is not None:
        rows = []
        for p in t.space.parameters:
            values = (", ".join(map(str, p.values)) if p.kind == "choice"
                      else f"[{fmt_param(p.low)}, {fmt_param(p.high)}]")
            when = ", ".join(f"{name} = {value}" for name, value in p.when) or "always"
            rows.append(Row((Cell(p.name), Cell(p.kind), Cell(values), Cell(when))))
        rows += [Row((Cell(name), Cell("fixed"), Cell(str(value)), Cell("always")))
                 for name, value in t.space.fixed.items()]
        blocks.append(Table(("parameter", "type", "values or range", "exists when"), tuple(rows), id="space-table",
                            caption=f"search space: {t.space.sampler} sampler, {len(t.space.seeds)} seeds per "
                                    f"configuration, baselines: {t.space.baseline}"))
    blocks += [Text(note, note=True) for note in t.notes]
    return Section("question", SECTIONS["question"], tuple(blocks))


def setup(context: Context) -> Section:
    t = context.tables
    blocks: list = []
    record = t.record or {}
    if record:
        pairs = [("budget", str(record.get("budget_name", "-"))), ("scheduler", str(record.get("scheduler", "-"))),
                 ("seeds", ", ".join(map(str, record.get("seeds") or [])) or "-"),
                 ("space file", str(record.get("space_path", "-")))]
        pairs += [(name, "-" if value is None else str(value)) for name, value in (record.get("budget") or {}).items()
                  if name != "seeds"]  # the budget's seeds (None: the space's) are the line above
        blocks.append(Facts(tuple(pairs)))
    else:
        blocks.append(Text("No study.json: the budget this study ran with is not recorded.", note=True))
    entries = {e.key: e for e in t.space.datasets} if t.space is not None else {}
    rows = []
    for key in t.datasets:
        entry, manifest = entries.get(key), t.manifests.get(key) or {}
        weight = entry.weight if entry else None
        rows.append(Row((
            Cell(key), number_cell(weight, "weight", fmt_param(weight)),
            Cell(("real: " + entry.root) if entry and entry.root else ("generated" if entry else "-")),
            Cell(str(entry.image_size) if entry and entry.image_size else "budget's"),
            Cell(entry.augment if entry else "-"),
            number_cell(manifest.get("listed"), "listed", str(manifest.get("listed", "-"))),
            number_cell(manifest.get("missing"), "missing", str(manifest.get("missing", "-"))),
            number_cell(manifest.get("dropped_queries"), "dropped", str(manifest.get("dropped_queries", "-"))),
            Cell(str(manifest.get("sha256", "-"))[:12]))))
    blocks.append(Table(("dataset", "weight", "images", "image size", "augment", "images listed", "missing",
                         "queries dropped", "image set (sha256)"), tuple(rows), id="datasets-table"))
    cells = ", ".join(f"{cell} ({weight:g})" for cell, weight in t.cell_weights.items() if weight > 0)
    blocks.append(Text(f"Score: the weighted harmonic mean (WHM) of recall over {cells or 'no cell'}."))
    versions = record.get("versions") or {}
    if versions:
        blocks.append(Text("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), note=True))
    return Section("setup", SECTIONS["setup"], tuple(blocks))


def ranking(context: Context) -> Section:
    r = context.tables.ranking
    if r.empty:
        return Section("ranking", SECTIONS["ranking"], (Text("No configuration has finished: nothing to rank."),))
    shown = r.head(TOP_ROWS)
    colors = [plots.ACCENT if c == context.best else plots.MUTED if role == "baseline" else plots.BASE
              for c, role in zip(shown["config_id"], shown["role"])]
    intervals = [plots.Interval(x["whm_mean"], x["whm_low"], x["whm_high"]) for _, x in shown.iterrows()]
    figure = plots.interval_figure([context.label(c) for c in shown["config_id"]], {"WHM": intervals},
                                   xlabel="seed-mean WHM with its 95% interval", colors=colors)
    scores = [c for c in r.columns if c.startswith("score/")] if len(context.tables.datasets) > 1 else []
    numbers = [("rank", fmt_param), ("whm_mean", num), ("whm_low", num), ("whm_high", num), ("p_vs_best", fmt_p),
               *[(c, num) for c in scores], ("n_seeds", fmt_param)]
    headers = ("configuration", "rank", "WHM", "low", "high", "p vs best",
               *[f"WHM {c.removeprefix('score/')}" for c in scores],
               "seeds", "tied with best", "epoch", "interval covers", "role", "note")
    rows = []
    for _, x in r.iterrows():
        tied = ("best" if x["rank"] == 1 else "?" if is_null(x["tied_with_best"])
                else "tied" if x["tied_with_best"] else "")
        epoch = "-" if is_null(x["epoch"]) else f"{x['epoch']}/{fmt_param(x['max_epochs'])}"
        rows.append(context.row(str(x["config_id"]), (
            *number_cells(x, numbers), Cell(tied), Cell(epoch + (" (stopped early)" if x["stopped_early"] else "")),
            text_cell(x["ci_covers"]), text_cell(x["role"]), text_cell(x["note"]))))
    blocks = [
        Text(f"{len(r)} configurations, best first by their seed-mean WHM at the epoch they were scored (the last "
             "all their seeds reached). The 95% interval covers what the 'interval covers' column says: with "
             "fewer than 3 seeds only test-set sampling (a bootstrap over test queries); from 3 seeds also the "
             "variation between seeds."),
        picture(figure, "seed-mean WHM with 95% intervals, best at the top"),
        Text(f"Red: the best; grey: baselines. 'tied': the paired comparison with the best (same seeds, same test "
             f"queries) does not reject at {ALPHA:.0%}, so the study cannot tell it from the best."
             + (f" The chart shows the top {TOP_ROWS} of {len(r)}." if len(r) > TOP_ROWS else ""), note=True),
        Table(headers, tuple(rows), id="ranking-table"),
    ]
    trials = context.tables.trials
    for _, x in trials[trials["status"] != DONE].drop_duplicates("config_id").iterrows():
        error = "" if is_null(x.get("error")) else f": {x['error']}"
        blocks.append(Text(f"Not ranked: {context.label(str(x['config_id']))} ({str(x['status']).lower()}{error})",
                           note=True))
    return Section("ranking", SECTIONS["ranking"], tuple(blocks))


def _gain_interval(x: pd.Series, suffix: str = "") -> plots.Interval | None:
    if is_null(x[f"gain{suffix}"]):
        return None
    return plots.Interval(x[f"gain{suffix}"], x[f"gain_low{suffix}"], x[f"gain_high{suffix}"])


def gains(context: Context) -> Section:
    g = context.tables.gains
    if g.empty:
        return Section("gains", SECTIONS["gains"], (Text(
            "No configuration has a matched baseline: the space sets `baseline: none`, or no regularised "
            "configuration finished. A gain is only ever measured against the same configuration without its "
            "regulariser, on the same seeds."),))
    datasets = [d for d in context.tables.datasets if f"gain/{d}" in g] if len(context.tables.datasets) > 1 else []
    series = {"WHM": [_gain_interval(x) for _, x in g.iterrows()]}
    series.update({d: [_gain_interval(x, f"/{d}") for _, x in g.iterrows()] for d in datasets})
    figure = plots.interval_figure(
        [context.label(str(c), f"{c} vs {b}") for c, b in zip(g["config_id"], g["baseline_id"])], series,
        xlabel="gain in seed-mean WHM over the matched baseline (95% interval)", reference=0.0,
        colors=[plots.ACCENT if not is_null(p) and p < ALPHA else plots.BASE for p in g["p_holm"]])
    numbers = [("epoch", fmt_param), ("n_seeds", fmt_param), ("gain", signed), ("gain_low", signed),
               ("gain_high", signed), ("p_value", fmt_p), ("p_holm", fmt_p), ("p_improvement", lambda v: num(v, 2)),
               ("detectable_gain", num), ("seeds_needed", lambda v: "-" if is_null(v) else str(int(v))),
               *[(f"gain/{d}", signed) for d in datasets]]
    headers = ("configuration", "baseline", "epoch", "seeds", "gain", "low", "high", "p", "p (Holm)", "P(X>Y)",
               "detectable gain", "seeds needed", *[f"gain {d}" for d in datasets], "interval covers", "note")
    rows = [context.row(str(x["config_id"]), (text_cell(x["baseline_id"]), *number_cells(x, numbers),
                                              text_cell(x["ci_covers"]), text_cell(x["note"])))
            for _, x in g.iterrows()]
    blocks = [
        Text("Each configuration against its matched baseline (the same configuration with regularizer none, the "
             "same seeds), paired by seed and test query at the epoch both reached."),
        picture(figure, "forest plot of the gains over matched baselines"),
        Text(f"Red: significant after Holm's correction over the study's {int(g['p_value'].notna().sum())} gains "
             f"(p (Holm) < {ALPHA}); a cross: no interval."
             + (" Colours per dataset: that dataset's own WHM gain." if datasets else "")
             + " P(X>Y): the share of (configuration seed, baseline seed) pairs where the configuration scores "
               "higher. Detectable gain: the smallest these seeds detect with 80% power; seeds needed: to detect "
               "the observed gain so (- : not estimable with fewer than 3 seeds).", note=True),
        Table(headers, tuple(rows), id="gains-table"),
    ]
    return Section("gains", SECTIONS["gains"], tuple(blocks))


def importance(context: Context) -> Section:
    imp = context.tables.importance
    if imp.empty:
        return Section("importance", SECTIONS["importance"], (Text("No configuration to assess."),))
    blocks: list = [Text("Which hyperparameters explain the seed-mean WHM, within each composer: Optuna's fANOVA "
                         "and PED-ANOVA (what it takes to reach the top configurations); each sums to 1 per composer. "
                         "A conditional hyperparameter gets only PED-ANOVA's number.")]
    found = imp[imp["fanova"].notna() | imp["ped_anova"].notna()]
    if len(found):
        by_composer = {str(c): {str(x["param"]): (float(x["fanova"]), float(x["ped_anova"]))
                                for _, x in part.iterrows()}
                       for c, part in found.groupby("composer", sort=False)}
        blocks.append(picture(plots.importance_figure(by_composer), "hyperparameter importance per composer"))
    else:
        notes = sorted({str(n) for n in imp["note"] if not is_null(n) and n})
        blocks.append(Text("No importance numbers: " + "; ".join(notes or ["none computed"]) + ".", note=True))
    numbers = [("fanova", num), ("ped_anova", num), ("n_configs", fmt_param), ("n_active", fmt_param)]
    rows = tuple(Row((text_cell(x["composer"]), text_cell(x["param"]), *number_cells(x, numbers),
                      text_cell(x["note"]))) for _, x in imp.iterrows())
    blocks.append(Table(("composer", "hyperparameter", "fANOVA", "PED-ANOVA", "configurations", "where it exists",
                         "note"), rows, id="importance-table"))
    return Section("importance", SECTIONS["importance"], tuple(blocks))


def cost(context: Context) -> Section:
    t = context.tables
    measures = {"wall time": "wall_time_s", "CPU time": "cpu_s", "GPU time": "gpu_s"}
    present = {name: column for name, column in measures.items() if column in t.trials}
    if not present:
        return Section("cost", SECTIONS["cost"], (Text("trials.parquet records no time (an older study).",
                                                       note=True),))
    per_config = t.trials.drop_duplicates("config_id").set_index("config_id")
    order = ([c for c in context.order if c in per_config.index]
             + [c for c in per_config.index if c not in context.order])  # then the failed and unfinished
    if "GPU time" in present and not per_config["gpu_s"].fillna(0).gt(0).any():
        present.pop("GPU time")
    rows = [context.row(str(c), [Cell(str(per_config.at[c, "status"]).lower()),
                                 Cell(fmt_param(per_config.at[c, "epoch"]) if "epoch" in per_config else "-"),
                                 *[number_cell(per_config.at[c, col], col, fmt_seconds(per_config.at[c, col]))
                                   for col in present.values()]]) for c in order]
    totals = per_config[list(present.values())].sum()
    rows.append(Row((Cell("total"), Cell(""), Cell(""),
                     *[number_cell(totals[col], f"total/{col}", fmt_seconds(totals[col])) for col in present.values()]),
                    style="total"))
    shown = order[:TOP_ROWS]
    figure = plots.cost_figure([context.label(c) for c in shown],
                               {name: per_config.loc[shown, col].fillna(0).to_numpy() for name, col in present.items()})
    return Section("cost", SECTIONS["cost"], (
        Text("What each configuration cost, all its seeds together (one trial trains every seed), summed over "
             "rungs and resumes. GPU seconds are wall time times the GPUs the trial held; a study on CPUs has "
             "none."),
        picture(figure, "wall time and CPU seconds per configuration"),
        Table(("configuration", "status", "epochs", *present), tuple(rows), id="cost-table")))


BUILDERS: tuple[Callable[[Context], Section], ...] = (
    question, setup, ranking, gains, importance, generalisation, curves, recall, breakdowns, cost, probes,
    reconstruction)
