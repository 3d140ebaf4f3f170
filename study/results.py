"""A study's tables -> Parquet and the printed report (methods.md A.9).

From `studies/<name>/` (`study.tables` says what each file holds) three tables:

* `ranking.parquet`: configurations best first, the interval of each seed-mean WHM over seeds and
  test queries (`study.stats.intervals`, its method named per row), tied-with-best from the paired
  comparison with the best (`study.ranking.rank_configs`);
* `gains.parquet`: each configuration against its matched baseline, paired by seed and query, with
  Holm-adjusted p-values, P(improvement) and the power of the seeds (`study.ranking.matched_gains`);
* `importance.parquet`: per composer, fANOVA and PED-ANOVA importances (`study.stats.importance`).

Example:
    python -m study.results studies/ga_vs_dim           # print the three tables
    python -m study.results studies/ga_vs_dim --write   # also (re)write them as Parquet
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.ranking import ALPHA, matched_gains, rank_configs
from study.stats.bootstrap import parse_cell
from study.stats.importance import MIN_CONFIGS, importance_table
from study.stats.intervals import MIN_SEEDS
from study.tables import DONE, Study, read_study, read_trials, trial_whm

__all__ = ["CELL_WEIGHTS_KEY", "Tables", "build_tables", "format_gains", "format_importance",
           "format_ranking", "main", "parse_cell", "read_trials", "trial_whm", "write_parquet_atomic",
           "write_ranking", "write_tables"]

N_BOOTSTRAP = 1000
_SHORT = {"seed t + query bootstrap": "seeds+test", "query bootstrap": "test only",
          "seed t": "seeds only", "none": "-"}
_EXPLAIN = {
    "seed t + query bootstrap": "seeds+test: Student t over seeds (n-1 df) combined with the test-set "
                                "variance from a bootstrap over test queries (hierarchical, {draws} draws)",
    "query bootstrap": f"test only: fewer than {MIN_SEEDS} seeds, so seed variation is NOT estimable; the "
                       f"interval covers test-set sampling only (query bootstrap, {{draws}} draws); run >= "
                       f"{MIN_SEEDS} seeds for an interval that covers both",
    "seed t": "seeds only: Student t over seeds; no per-query ranks, so test-set sampling is left out",
    "none": f"-: fewer than {MIN_SEEDS} seeds and no per-query ranks: no interval",
}


@dataclass(frozen=True)
class Tables:
    study: Study
    ranking: pd.DataFrame
    gains: pd.DataFrame
    importance: pd.DataFrame


def build_tables(study_dir: str | Path, *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> Tables:
    """Read `study_dir` and compute the ranking, the gains and the importance tables."""
    study = read_study(study_dir, n_draws=n_bootstrap, seed=seed)
    ranking = rank_configs(study)
    return Tables(study, ranking, matched_gains(study), importance_table(ranking, study.space, seed=seed))


def _write(tables: Tables) -> None:
    metadata = {CELL_WEIGHTS_KEY: json.dumps(dict(tables.study.cell_weights), sort_keys=True).encode()}
    for name in ("ranking", "gains", "importance"):
        write_parquet_atomic(getattr(tables, name), tables.study.directory / f"{name}.parquet", metadata)


def write_tables(study_dir: str | Path, *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Write ranking.parquet, gains.parquet and importance.parquet into `study_dir` atomically, each
    with the cell weights in its metadata; return the ranking."""
    tables = build_tables(study_dir, n_bootstrap=n_bootstrap, seed=seed)
    _write(tables)
    return tables.ranking


write_ranking = write_tables  # the name study/run.py calls


def _is_null(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _fmt(value: Any) -> str:
    if _is_null(value):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def _p(value: Any) -> str:
    return "-" if _is_null(value) else ("<1e-4" if value < 1e-4 else f"{value:.3g}")


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers)] + [line(r) for r in rows])


def _varying(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("param/")
            and frame[c].map(lambda v: "-" if _is_null(v) else str(v)).nunique() > 1]


def _interval(mean: float, low: float, high: float, *, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if _is_null(low):
        return f"{mean:{sign}.4f} [-]"
    return f"{mean:{sign}.4f} [{low:{sign}.4f}, {high:{sign}.4f}]"


def _method_notes(methods: pd.Series, n_draws: int) -> list[str]:
    return ["  " + _EXPLAIN[m].format(draws=n_draws) for m in dict.fromkeys(methods.dropna())]


def _row_notes(frame: pd.DataFrame) -> list[str]:
    return [f"note: {r['config_id']}: {r['note']}" for _, r in frame.iterrows() if not _is_null(r["note"]) and r["note"]]


def format_ranking(ranking: pd.DataFrame, *, top: int | None = 20, n_draws: int = N_BOOTSTRAP) -> str:
    """Fixed-width ranking: the interval with what it covers, seeds, the epoch scored (of the
    maximum; "early" when the scheduler stopped it), tied with the best, the hyperparameters that
    vary, and each dataset's own WHM."""
    if ranking.empty:
        return "no finished configuration to rank"
    shown = ranking.head(top) if top else ranking
    varying = _varying(ranking)
    scores = [c for c in ranking.columns if c.startswith("score/")]
    headers = (["rank", "whm [95% CI]", "covers", "seeds", "epoch", "early", "tied"]
               + [c.removeprefix("param/") for c in varying] + [c.removeprefix("score/") for c in scores])
    def tied(r: pd.Series) -> str:
        if r["rank"] == 1:
            return "best"
        return "?" if _is_null(r["tied_with_best"]) else ("*" if r["tied_with_best"] else "")
    def epoch(r: pd.Series) -> str:
        return "-" if _is_null(r["epoch"]) else f"{r['epoch']}/{_fmt(r['max_epochs'])}"
    rows = [[str(r["rank"]), _interval(r["whm_mean"], r["whm_low"], r["whm_high"]),
             _SHORT.get(r["ci_method"], r["ci_method"]), str(r["n_seeds"]), epoch(r),
             "early" if r["stopped_early"] else "", tied(r)]
            + [_fmt(r[c]) for c in varying] + [f"{r[c]:.4f}" for c in scores]
            for _, r in shown.iterrows()]
    right = {0, 3, 4} | set(range(7 + len(varying), len(headers)))
    notes = ["whm: mean over seeds of the WHM at the epoch scored (the last all its seeds reached); covers:"]
    notes += _method_notes(ranking["ci_method"], n_draws)
    notes.append(f"tied: * = the paired comparison with the best (same seeds, same test queries, at the "
                 f"epoch both reached) does not reject at {ALPHA:.0%}: the study cannot tell it from the "
                 "best; ? = not comparable (see its note)")
    if ranking["stopped_early"].any():
        notes.append("early: stopped by the scheduler and scored at the epoch it stopped; its comparisons "
                     "use the epoch both configurations reached")
    if len(shown) < len(ranking):
        notes.append(f"(top {len(shown)} of {len(ranking)} configurations)")
    return "\n".join([_table(headers, rows, right), *notes, *_row_notes(shown)])


def format_gains(gains: pd.DataFrame, *, n_draws: int = N_BOOTSTRAP) -> str:
    """Fixed-width gains against matched baselines."""
    if gains.empty:
        return "no configuration with a matched baseline (gains are only ever against one)"
    context = [c for c in ("param/composer", "param/regularizer") if c in gains]
    varying = context + [c for c in _varying(gains) if c not in context]
    headers = ([c.removeprefix("param/") for c in varying]
               + ["epoch", "seeds", "gain [95% CI]", "p", "p_holm", "P(X>Y)", "detectable", "seeds needed",
                  "covers"])
    rows = [[_fmt(r[c]) for c in varying]
            + [_fmt(r["epoch"]), _fmt(r["n_seeds"]),
               "-" if _is_null(r["gain"]) else _interval(r["gain"], r["gain_low"], r["gain_high"], signed=True),
               _p(r["p_value"]), _p(r["p_holm"]), _fmt(r["p_improvement"]),
               "-" if _is_null(r["detectable_gain"]) else f"{r['detectable_gain']:.4f}",
               "-" if _is_null(r["seeds_needed"]) else str(int(r["seeds_needed"])),
               _SHORT.get(r["ci_method"], "-") if not _is_null(r["ci_method"]) else "-"]
            for _, r in gains.iterrows()]
    right = set(range(len(varying), len(varying) + 8))
    notes = ["gain: mean over seeds of WHM(configuration) - WHM(its matched baseline: same configuration, "
             "regularizer none, same seeds), per seed and query, at the epoch both reached; covers:"]
    notes += _method_notes(gains["ci_method"], n_draws)
    notes += [f"p: paired test (p < {ALPHA} exactly when the interval excludes 0); p_holm: Holm-adjusted "
              f"over the {int(gains['p_value'].notna().sum())} gains of this study",
              "P(X>Y): share of (configuration seed, baseline seed) pairs where the configuration scores "
              "higher, ties 1/2 (rliable)",
              f"detectable: smallest gain these seeds detect with 80% power at {ALPHA}; seeds needed: to "
              "detect the observed gain so (- : no number of seeds would on this test set, or fewer than "
              f"{MIN_SEEDS} seeds to estimate from)"]
    return "\n".join([_table(headers, rows, right), *notes, *_row_notes(gains)])


def format_importance(importance: pd.DataFrame) -> str:
    if importance.empty:
        return "no configurations to assess"
    headers = ["composer", "param", "fanova", "ped_anova", "configs", "note"]
    rows = [[str(r["composer"]), str(r["param"]), _fmt(r["fanova"]), _fmt(r["ped_anova"]),
             str(r["n_configs"]), "" if _is_null(r["note"]) else str(r["note"])]
            for _, r in importance.iterrows()]
    notes = ["fanova / ped_anova: share of the seed-mean WHM's variation each hyperparameter explains "
             "within a composer (Optuna's fANOVA; PED-ANOVA: what it takes to reach the top "
             "ped_anova_quantile of configurations); each column sums to 1 per composer",
             f"configurations are scored at their own epoch; fewer than {MIN_CONFIGS} per composer get no numbers"]
    return "\n".join([_table(headers, rows, {2, 3, 4}), *notes])


def _count_from(least: int, meaning: str):
    """An argparse type: an integer >= `least`, refused with what it counts."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least} ({meaning}), got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least} ({meaning}), got {value}")
        return value
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.results",
        description="Rank a study's configurations by WHM, test gains against matched baselines and "
                    "assess hyperparameter importance, from the files of a study directory.")
    parser.add_argument("study_dir", type=Path, help="e.g. studies/ga_vs_dim")
    parser.add_argument("--top", type=_count_from(0, "rows to print; 0 prints all"), default=20,
                        help="rows to print; 0 prints all (default 20)")
    parser.add_argument("--write", action="store_true",
                        help="also write ranking.parquet, gains.parquet and importance.parquet")
    parser.add_argument("--bootstrap", type=_count_from(2, "query-bootstrap draws"), default=N_BOOTSTRAP,
                        help=f"query-bootstrap draws (default {N_BOOTSTRAP})")
    args = parser.parse_args(argv)
    try:
        tables = build_tables(args.study_dir, n_bootstrap=args.bootstrap)
        if args.write:
            _write(tables)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows, weights = tables.study.rows, tables.study.cell_weights
    n_done = int((rows["status"] == DONE).sum())
    print(f"{args.study_dir}: {len(rows)} rows (configuration x seed), {n_done} finished, "
          f"{len(tables.ranking)} configurations; score = WHM over "
          f"{', '.join(f'{c}:{w:g}' for c, w in weights.items() if w > 0)}")
    for note in tables.study.notes:
        print(f"note: {note}")
    print(format_ranking(tables.ranking, top=args.top or None, n_draws=args.bootstrap))
    print("\ngains against matched baselines:")
    print(format_gains(tables.gains, n_draws=args.bootstrap))
    print("\nhyperparameter importance per composer:")
    print(format_importance(tables.importance))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
