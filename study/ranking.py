"""A read study -> the ranking and the gains tables (methods.md A.9).

* Ranking: one row per finished configuration, scored at its epoch (the last all its seeds
  reached), best first, with the interval of its seed-mean WHM (`study.stats.intervals`) and
  whether the paired comparison with the best rejects at 5% ("tied" when it does not).
* Gains: each configuration against its matched baseline only (`baseline_id`: the same
  configuration with `regularizer: none`, same seeds), at the epoch both reached, paired by seed
  and query, with Holm's correction across all the study's gains.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.stats.bootstrap import whm_of
from study.stats.intervals import MeanEstimate, estimate_mean
from study.stats.paired import (detectable_gain, holm, paired_difference, probability_of_improvement,
                                seeds_needed)
from study.tables import Evaluation, Study

__all__ = ["ALPHA", "Comparison", "compare", "matched_gains", "rank_configs"]

ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """X against Y at the epoch both reached, on their common seeds: differences X - Y."""

    x_id: str
    y_id: str
    epoch: int | None
    seeds: tuple[int, ...]
    whm: MeanEstimate | None  # None when there is nothing to pair
    datasets: dict[str, MeanEstimate] = field(default_factory=dict)
    cells: dict[str, float] = field(default_factory=dict)  # mean recall difference per cell
    p_improvement: float = float("nan")
    note: str = ""


def _whm(study: Study, recalls: np.ndarray, dataset: str | None = None) -> np.ndarray:
    at = list(range(len(study.cells.names))) if dataset is None else study.cells.positions(dataset)
    return whm_of(recalls[..., at], np.asarray(study.cells.weights)[at])


def _common_epoch(study: Study, x_id: str, y_id: str) -> int | None:
    epochs = [study.configurations[c].epoch for c in (x_id, y_id)]
    return None if None in epochs else min(epochs)


def compare(study: Study, x_id: str, y_id: str) -> Comparison:
    """The paired comparison of configuration `x_id` with `y_id` (ranking's tie test, gains)."""
    epoch = _common_epoch(study, x_id, y_id)
    if epoch is None and study.configurations[x_id].epoch != study.configurations[y_id].epoch:
        return Comparison(x_id, y_id, None, (), None, note="no common scored epoch")
    ex, ey = study.evaluation(x_id, epoch), study.evaluation(y_id, epoch)
    missing = [c for c, e in ((x_id, ex), (y_id, ey)) if e is None]
    if missing:
        return Comparison(x_id, y_id, epoch, (), None,
                          note=f"no recalls of {missing} at epoch {epoch} (history.parquet or ranks)")
    seeds = tuple(sorted(set(ex.seeds) & set(ey.seeds)))
    if not seeds:
        return Comparison(x_id, y_id, epoch, (), None, note="no common seed")
    ex, ey = ex.select(seeds), ey.select(seeds)
    paired = _paired_draws(ex, ey)
    notes = [n for n in (ex.note, ey.note) if n]
    if paired is None and ex.draws is not None and ey.draws is not None:
        notes.append("the two evaluated different queries: test-set sampling left out")
    xd, yd = paired if paired is not None else (None, None)
    x_whm, y_whm = _whm(study, ex.recalls), _whm(study, ey.recalls)
    estimate = paired_difference(x_whm, y_whm,
                                 None if xd is None else _whm(study, xd),
                                 None if yd is None else _whm(study, yd))
    datasets = {d: paired_difference(_whm(study, ex.recalls, d), _whm(study, ey.recalls, d),
                                     None if xd is None else _whm(study, xd, d),
                                     None if yd is None else _whm(study, yd, d))
                for d in study.cells.datasets}
    cells = dict(zip(study.cells.names, (ex.recalls - ey.recalls).mean(axis=0).tolist()))
    return Comparison(x_id, y_id, epoch, seeds, estimate, datasets, cells,
                      probability_of_improvement(x_whm, y_whm), "; ".join(notes))


def _paired_draws(ex: Evaluation, ey: Evaluation) -> tuple[np.ndarray, np.ndarray] | None:
    """Both arms' draws when they rest on the same queries: the bootstrap draws the same resample
    for a dataset in every configuration (common random numbers), so the draws are paired."""
    if ex.draws is None or ey.draws is None or ex.queries is None or ey.queries is None:
        return None
    same = ex.queries.keys() == ey.queries.keys() and all(
        np.array_equal(ex.queries[g], ey.queries[g]) for g in ex.queries)
    return (ex.draws, ey.draws) if same else None


def _interval(estimate: MeanEstimate, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = estimate.interval(bounds=bounds)
    return float(low), float(high)


def rank_configs(study: Study, *, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per finished configuration, best first.

    Columns: `rank`, `config_id`, `whm_mean` (mean over seeds of the WHM at `epoch`),
    `whm_low`/`whm_high` (95% interval, `study.stats.intervals`), `ci_method`, `ci_covers`,
    `n_seeds`, `epoch` (scored), `max_epochs`, `stopped_early`, `p_vs_best` (paired comparison
    with rank 1 at the epoch both reached), `tied_with_best` (p_vs_best >= alpha; <NA> when
    not comparable; True for rank 1), `role`, `baseline_id`, `note`, `score/<dataset>` (the
    dataset's own WHM, mean over seeds), then the `param/*` columns.
    """
    rows = []
    for config in study.configurations.values():
        ev = study.evaluation(config.config_id, config.epoch)
        per_seed = _whm(study, ev.recalls)
        estimate = estimate_mean(per_seed, None if ev.draws is None else _whm(study, ev.draws))
        low, high = _interval(estimate, (0.0, 1.0))
        rows.append({
            "config_id": config.config_id, "whm_mean": float(estimate.mean), "whm_low": low,
            "whm_high": high, "ci_method": estimate.method, "ci_covers": estimate.covers,
            "n_seeds": len(ev.seeds), "epoch": config.epoch, "max_epochs": config.max_epochs,
            "stopped_early": config.stopped_early, "role": config.role,
            "baseline_id": config.baseline_id, "note": ev.note,
            **{f"score/{d}": float(_whm(study, ev.recalls, d).mean()) for d in study.cells.datasets},
            **config.params})
    scores = [f"score/{d}" for d in study.cells.datasets]
    columns = (["config_id", "whm_mean", "whm_low", "whm_high", "ci_method", "ci_covers", "n_seeds",
                "epoch", "max_epochs", "stopped_early", "role", "baseline_id", "note"]
               + scores + study.param_columns)
    ranking = pd.DataFrame(rows, columns=columns)
    for column in study.param_columns:  # keep the stored dtypes (nulls of inactive parameters)
        ranking[column] = ranking[column].astype(study.rows[column].dtype)
    ranking["epoch"] = ranking["epoch"].astype("Int64")
    ranking["max_epochs"] = ranking["max_epochs"].astype("Int64")
    ranking = ranking.sort_values(["whm_mean", "n_seeds"], ascending=False, kind="stable")
    ranking = ranking.reset_index(drop=True)
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    p_best, tied, notes = [], [], []
    for position, (config_id, note) in enumerate(zip(ranking["config_id"], ranking["note"])):
        if position == 0:
            p_best.append(float("nan"))
            tied.append(True)
            notes.append(note)
            continue
        comparison = compare(study, config_id, ranking["config_id"].iloc[0])
        p = float(comparison.whm.p_value()) if comparison.whm is not None else float("nan")
        p_best.append(p)
        tied.append(pd.NA if np.isnan(p) else bool(p >= alpha))
        extra = f"vs best: {comparison.note}" if comparison.whm is None else ""
        notes.append("; ".join(n for n in (note, extra) if n))
    ranking["note"] = notes
    ranking.insert(11, "p_vs_best", p_best)
    ranking.insert(12, "tied_with_best", pd.array(tied, dtype="boolean"))
    return ranking


def matched_gains(study: Study, *, alpha: float = ALPHA, target_power: float = 0.8) -> pd.DataFrame:
    """One row per finished configuration with a matched baseline (`baseline_id`), X = it,
    Y = the baseline.

    Columns: `config_id`, `baseline_id`, `epoch` (compared: the smaller scored epoch),
    `n_seeds` (common seeds), `gain` (mean over seeds of WHM_X - WHM_Y), `gain_low`/`gain_high`
    (95% paired interval), `p_value`, `p_holm` (Holm over every row), `p_improvement`
    (rliable's P(X > Y) over seed pairs), `detectable_gain` (smallest |gain| these seeds detect
    with 80% power at alpha), `seeds_needed` (seeds to detect the observed gain so; NaN when
    none would), `ci_method`, `ci_covers`, `note`, then per dataset `gain/<d>`, `gain_low/<d>`,
    `gain_high/<d>`, per cell `gain/<dataset>/<split>@<k>` (mean recall difference), and the
    configuration's `param/*`.
    """
    rows = []
    for config in study.configurations.values():
        if config.role == "baseline" or config.baseline_id is None:
            continue
        row = {"config_id": config.config_id, "baseline_id": config.baseline_id}
        if config.baseline_id not in study.configurations:
            rows.append({**row, "note": f"baseline {config.baseline_id} has no finished seeds",
                         **config.params})
            continue
        comparison = compare(study, config.config_id, config.baseline_id)
        row.update({"epoch": comparison.epoch, "n_seeds": len(comparison.seeds),
                    "note": comparison.note})
        estimate = comparison.whm
        if estimate is not None:
            low, high = _interval(estimate, (-1.0, 1.0))
            seed_var = float(estimate.seed_var)
            query_var = float(estimate.query_var)
            row.update({
                "gain": float(estimate.mean), "gain_low": low, "gain_high": high,
                "p_value": float(estimate.p_value()), "p_improvement": comparison.p_improvement,
                "detectable_gain": detectable_gain(seed_var=seed_var, query_var=query_var,
                                                   n_seeds=estimate.n_seeds, alpha=alpha,
                                                   target_power=target_power),
                "seeds_needed": seeds_needed(float(estimate.mean), seed_var=seed_var,
                                             query_var=query_var, alpha=alpha,
                                             target_power=target_power),
                "ci_method": estimate.method, "ci_covers": estimate.covers})
            for dataset, part in comparison.datasets.items():
                d_low, d_high = _interval(part, (-1.0, 1.0))
                row.update({f"gain/{dataset}": float(part.mean), f"gain_low/{dataset}": d_low,
                            f"gain_high/{dataset}": d_high})
            row.update({f"gain/{cell}": value for cell, value in comparison.cells.items()})
        rows.append({**row, **config.params})
    datasets = study.cells.datasets
    columns = (["config_id", "baseline_id", "epoch", "n_seeds", "gain", "gain_low", "gain_high",
                "p_value", "p_holm", "p_improvement", "detectable_gain", "seeds_needed", "ci_method",
                "ci_covers", "note"]
               + [f"{kind}/{d}" for d in datasets for kind in ("gain", "gain_low", "gain_high")]
               + [f"gain/{cell}" for cell in study.cells.names] + study.param_columns)
    gains = pd.DataFrame(rows, columns=columns)
    gains["p_holm"] = holm(gains["p_value"].to_numpy(dtype=float))
    for column in ("epoch", "n_seeds"):
        gains[column] = gains[column].astype("Int64")
    for column in study.param_columns:
        gains[column] = gains[column].astype(study.rows[column].dtype)
    return gains
