"""Trials -> tables -> ranking (methods.md A.9).

`studies/<name>/trials.parquet` holds one row per trial (`trial_id`, `status`, `seed`,
`param/<name>`, `recall/<dataset>/<split>@<k>`, `whm`, ...) and, in its schema metadata under
`cirstudy.cell_weights`, the weight of each cell `<dataset>/<split>@<k>`. From it:

* a configuration is every `param/*` column (the seed is not a param; nulls equal nulls);
* only trials with status TERMINATED count (all rows when there is no `status` column), and
  their WHM is recomputed from the recall columns, so a table can be re-ranked with new weights;
* per configuration: mean WHM over seeds, a 95% percentile-bootstrap interval of that mean,
  whether the interval overlaps the best's, and a WHM per dataset;
* per composer: the gain of each regulariser over the same composer without one, paired by seed,
  with an exact sign-flip permutation test.

Example:
    python -m study.results studies/ga_vs_dim           # print the ranking and the gains
    python -m study.results studies/ga_vs_dim --write   # also (re)write ranking/gains.parquet
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.metrics import whm
from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic

__all__ = ["CELL_WEIGHTS_KEY", "format_gains", "format_ranking", "main", "parse_cell",
           "rank_configs", "read_trials", "regularizer_gains", "sign_flip_p_value", "trial_whm",
           "write_parquet_atomic", "write_ranking"]

DONE = "TERMINATED"
_CELL = re.compile(r"^(?P<dataset>[^/@]+)/(?P<split>[^/@]+)@(?P<k>[0-9]+)$")


def parse_cell(cell: str) -> tuple[str, str, int]:
    """"css/test@10" -> ("css", "test", 10)."""
    match = _CELL.match(cell)
    if match is None:
        raise ValueError(f"cell {cell!r} is not '<dataset>/<split>@<k>' (e.g. 'css/test@10')")
    return match["dataset"], match["split"], int(match["k"])


def _check_weights(cell_weights: Mapping[str, float], *, source: str = "cell_weights") -> None:
    for cell, weight in cell_weights.items():
        parse_cell(cell)
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{source}: weight of cell {cell!r} must be a number >= 0, got {weight!r}")
    if not any(w > 0 for w in cell_weights.values()):
        raise ValueError(f"{source}: no cell has weight > 0 (got {dict(cell_weights)}); "
                         "the score would be empty")


def _is_null(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def trial_whm(row: Mapping[str, Any], cell_weights: Mapping[str, float]) -> float:
    """WHM of one trial over the cells with weight > 0, read from its `recall/<cell>` columns."""
    _check_weights(cell_weights)
    cells = [cell for cell, weight in cell_weights.items() if weight > 0]
    columns = [f"recall/{cell}" for cell in cells]
    missing = [c for c in columns if c not in row or _is_null(row[c])]
    if missing:
        raise ValueError(f"trial {row.get('trial_id', '?')}: no recall in {missing}, which the "
                         f"cell weights {dict(cell_weights)} score")
    return whm([float(row[c]) for c in columns], [float(cell_weights[c]) for c in cells])


def _param_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith("param/")]


def _dataset_weights(cell_weights: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{dataset: {cell: weight}} for the datasets that have a cell with weight > 0."""
    by_dataset: dict[str, dict[str, float]] = {}
    for cell, weight in cell_weights.items():
        if weight > 0:
            by_dataset.setdefault(parse_cell(cell)[0], {})[cell] = weight
    return by_dataset


def _scored_trials(trials: pd.DataFrame, cell_weights: Mapping[str, float]) -> pd.DataFrame:
    """The finished trials, with `whm` and `score/<dataset>` recomputed from their recalls."""
    _check_weights(cell_weights)
    done = trials[trials["status"] == DONE] if "status" in trials else trials
    done = done.reset_index(drop=True)
    records = done.to_dict("records")
    done["whm"] = [trial_whm(r, cell_weights) for r in records]
    for dataset, weights in _dataset_weights(cell_weights).items():
        done[f"score/{dataset}"] = [trial_whm(r, weights) for r in records]
    return done


def _bootstrap_interval(values: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean; a fresh Generator(seed) per call, so a
    configuration's interval does not depend on which other configurations the study has."""
    mean = float(values.mean())
    if np.all(values == values[0]):
        return mean, mean
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_bootstrap, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return min(float(low), mean), max(float(high), mean)  # guards float rounding at the edges


def rank_configs(trials: pd.DataFrame, cell_weights: Mapping[str, float], *,
                 n_bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per configuration, best first.

    Columns: `rank` (1..n by `whm_mean` descending; equal means by more seeds, then first
    appearance), `whm_mean` (mean over seeds of the WHM; trials sharing a seed are averaged
    first), `whm_low`/`whm_high` (95% bootstrap interval of that mean; degenerate for one seed),
    `n_seeds`, `tied_with_best` (interval overlaps the best's), `score/<dataset>` (the
    dataset's own WHM, mean over seeds), then the `param/*` columns with their dtypes.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    scored = _scored_trials(trials, cell_weights)
    params = _param_columns(scored)
    values = ["whm"] + [c for c in scored.columns if c.startswith("score/")]
    stats = ["rank", "whm_mean", "whm_low", "whm_high", "n_seeds", "tied_with_best"]

    groups: dict[tuple, list[int]] = {}
    for position, row in enumerate(scored[params].itertuples(index=False, name=None)):
        groups.setdefault(tuple(None if _is_null(v) else v for v in row), []).append(position)
    rows = []
    for positions in groups.values():
        part = scored.iloc[positions]
        per_seed = part.groupby("seed", dropna=False)[values].mean() if "seed" in part else part[values]
        whms = per_seed["whm"].to_numpy(dtype=float)
        low, high = _bootstrap_interval(whms, n_bootstrap, seed)
        rows.append({"whm_mean": float(whms.mean()), "whm_low": low, "whm_high": high,
                     "n_seeds": len(whms), **per_seed[values[1:]].mean().to_dict()})
    firsts = [positions[0] for positions in groups.values()]
    ranking = pd.concat([pd.DataFrame(rows, columns=stats[1:5] + values[1:]),
                         scored.iloc[firsts][params].reset_index(drop=True)], axis=1)
    ranking = ranking.sort_values(["whm_mean", "n_seeds"], ascending=False, kind="stable")
    ranking = ranking.reset_index(drop=True)
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    if len(ranking):
        best = ranking.iloc[0]
        tied = (ranking["whm_low"] <= best["whm_high"]) & (ranking["whm_high"] >= best["whm_low"])
    else:
        tied = pd.Series([], dtype=bool)
    ranking.insert(5, "tied_with_best", tied.astype(bool))
    return ranking


def sign_flip_p_value(diffs: Sequence[float], *, max_exact: int = 16,
                      n_samples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(diffs) = 0 by flipping signs.

    Exact over all 2^n sign patterns when n <= max_exact (p = share of patterns whose |sum| is
    at least the observed one, the observed pattern included); otherwise `n_samples` seeded
    random patterns, p = (1 + hits) / (1 + n_samples).
    """
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("sign_flip_p_value needs at least one paired difference")
    observed = abs(d.sum())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).sum()))  # equal sums must count as equal
    if d.size <= max_exact:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)  # (2^n, n)
        return float(np.mean(np.abs(signs @ d) >= observed - tolerance))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_samples, d.size))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (1 + hits) / (1 + n_samples)


def regularizer_gains(trials: pd.DataFrame, cell_weights: Mapping[str, float], *,
                      group: str = "param/composer", factor: str = "param/regularizer",
                      baseline: str = "none", seed: int = 0) -> pd.DataFrame:
    """Per `group` value and `factor` value != `baseline`: the gain in mean WHM over the same
    group value with `baseline`, paired by seed.

    Per seed present in both: mean WHM of the (group, factor) trials minus mean WHM of the
    (group, baseline) trials. Columns: `group`, `factor`, `gain_mean`, `n_pairs`, `p_value`
    (`sign_flip_p_value`; `seed` seeds its Monte-Carlo branch). Pairs of values without a
    common seed are left out; the frame is empty when `group`, `factor` or `seed` is absent.
    """
    columns = [group, factor, "gain_mean", "n_pairs", "p_value"]
    if not {group, factor, "seed"} <= set(trials.columns):
        return pd.DataFrame(columns=columns)
    scored = _scored_trials(trials, cell_weights).dropna(subset=[group, factor, "seed"])
    if scored.empty:
        return pd.DataFrame(columns=columns)
    # rows (group value, factor value), columns seed; NaN where that seed did not run
    table = scored.groupby([group, factor, "seed"])["whm"].mean().unstack("seed")
    rows = []
    for (g, f) in sorted(table.index, key=lambda key: (str(key[0]), str(key[1]))):
        if f == baseline or (g, baseline) not in table.index:
            continue
        diffs = (table.loc[(g, f)] - table.loc[(g, baseline)]).dropna().to_numpy(dtype=float)
        if diffs.size:
            rows.append({group: g, factor: f, "gain_mean": float(diffs.mean()),
                         "n_pairs": int(diffs.size), "p_value": sign_flip_p_value(diffs, seed=seed)})
    return pd.DataFrame(rows, columns=columns)


def read_trials(study_dir: str | Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """`<study_dir>/trials.parquet` -> (trials, cell weights); errors name the file and the fix."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study directory")
    path = study_dir / "trials.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the study driver (python -m study.run) "
                                "writes it as trials finish")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    raw = (table.schema.metadata or {}).get(CELL_WEIGHTS_KEY)
    if raw is None:
        raise ValueError(f"{path}: schema metadata lacks {CELL_WEIGHTS_KEY.decode()!r} (the cell "
                         "weights the driver writes); rewrite it with write_parquet_atomic(..., "
                         "metadata={CELL_WEIGHTS_KEY: json.dumps(weights).encode()})")
    try:
        weights = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: {CELL_WEIGHTS_KEY.decode()!r} is not JSON ({error})") from None
    if not isinstance(weights, dict):
        raise ValueError(f"{path}: {CELL_WEIGHTS_KEY.decode()!r} must be a JSON object "
                         f"{{cell: weight}}, got {weights!r}")
    _check_weights(weights, source=f"{path} {CELL_WEIGHTS_KEY.decode()!r}")
    return table.to_pandas(), {cell: float(w) for cell, w in weights.items()}


def _fmt(value: Any) -> str:
    if _is_null(value):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for cells in [headers, *rows]:
        padded = [c.rjust(w) if i in right else c.ljust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def format_ranking(ranking: pd.DataFrame, *, top: int | None = 20) -> str:
    """Fixed-width table: rank, whm_mean [low, high], seeds, tie marker, the params that vary
    across configurations (all of them when only one configuration exists), dataset scores."""
    if ranking.empty:
        return "no finished trials to rank"
    params = _param_columns(ranking)
    varying = [c for c in params
               if len({None if _is_null(v) else v for v in ranking[c]}) > 1] or params
    scores = [c for c in ranking.columns if c.startswith("score/")]
    shown = ranking if top is None else ranking.head(top)
    headers = ["rank", "whm [95% CI]", "seeds", "tied"] + [c[len("param/"):] for c in varying] \
        + [c[len("score/"):] for c in scores]
    rows = [[str(r["rank"]), f"{r['whm_mean']:.4f} [{r['whm_low']:.4f}, {r['whm_high']:.4f}]",
             str(r["n_seeds"]), "*" if r["tied_with_best"] else ""]
            + [_fmt(r[c]) for c in varying] + [f"{r[c]:.4f}" for c in scores]
            for _, r in shown.iterrows()]
    right = {0, 2} | set(range(4 + len(varying), len(headers)))
    notes = ["* = 95% interval overlaps the best's: the seeds cannot tell it from the best"]
    if len(shown) < len(ranking):
        notes.append(f"(top {len(shown)} of {len(ranking)} configurations)")
    return "\n".join([_table(headers, rows, right), *notes])


def format_gains(gains: pd.DataFrame) -> str:
    """Fixed-width table of `regularizer_gains`."""
    if gains.empty:
        return "no regulariser/baseline pairs with a common seed"
    group, factor = gains.columns[:2]
    headers = [group.removeprefix("param/"), factor.removeprefix("param/"), "gain", "pairs", "p"]
    rows = [[_fmt(r[group]), _fmt(r[factor]), f"{r['gain_mean']:+.4f}", str(r["n_pairs"]),
             f"{r['p_value']:.3g}"] for _, r in gains.iterrows()]
    return _table(headers, rows, right={2, 3, 4})


def write_ranking(study_dir: str | Path, *, n_bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Read trials.parquet; write ranking.parquet and gains.parquet beside it atomically, each
    carrying the cell weights in its metadata; return the ranking."""
    trials, weights = read_trials(study_dir)
    ranking = rank_configs(trials, weights, n_bootstrap=n_bootstrap, seed=seed)
    _write_tables(Path(study_dir), ranking, regularizer_gains(trials, weights, seed=seed), weights)
    return ranking


def _write_tables(study_dir: Path, ranking: pd.DataFrame, gains: pd.DataFrame,
                  cell_weights: Mapping[str, float]) -> None:
    metadata = {CELL_WEIGHTS_KEY: json.dumps(dict(cell_weights), sort_keys=True).encode()}
    write_parquet_atomic(ranking, study_dir / "ranking.parquet", metadata)
    write_parquet_atomic(gains, study_dir / "gains.parquet", metadata)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.results",
        description="Rank a study's configurations by WHM, recomputed from trials.parquet.")
    parser.add_argument("study_dir", type=Path, help="e.g. studies/ga_vs_dim")
    parser.add_argument("--top", type=int, default=20, help="rows to print; 0 prints all (default 20)")
    parser.add_argument("--write", action="store_true",
                        help="also write ranking.parquet and gains.parquet into the study dir")
    args = parser.parse_args(argv)
    try:
        trials, weights = read_trials(args.study_dir)
        ranking = rank_configs(trials, weights)
        gains = regularizer_gains(trials, weights)
        if args.write:
            _write_tables(args.study_dir, ranking, gains, weights)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    n_done = int((trials["status"] == DONE).sum()) if "status" in trials else len(trials)
    print(f"{args.study_dir}: {len(trials)} trials, {n_done} finished, {len(ranking)} "
          f"configurations; score = WHM over {', '.join(f'{c}:{w:g}' for c, w in weights.items() if w > 0)}")
    print(format_ranking(ranking, top=args.top or None))
    if not gains.empty:
        print("\nregulariser gain over the same composer without one (paired by seed):")
        print(format_gains(gains))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
