"""A study directory read into typed pieces: configurations, their per-seed recalls at any epoch, and
the query-level bootstrap of those recalls from the stored first-hit ranks.

Files (written by the study driver):
* `trials.parquet`: one row per (configuration, seed) at the configuration's scored epoch, with
  `config_id`, `role`, `baseline_id`, `status`, `seed`, `epoch`, `max_epochs`, `stopped_early`,
  `param/*`, `recall/<dataset>/<split>@<k>`; schema metadata `cirstudy.cell_weights` = the WHM
  weight of each cell. Only status TERMINATED counts. A file without `config_id` (written before
  configurations were scheduled whole) is grouped by its `param/*` values instead.
* `history.parquet`: the same metrics for every (config_id, seed, epoch) reported.
* `parts/`: the rows of the trials that ended since those two were last rebuilt, one part per trial
  end (`study.table_parts`); every reader here lays them over the two tables.
* `ranks/<config_id>.parquet`: per-query 0-based first-hit ranks (`seed`, `epoch`, `dataset`,
  `split`, `query`, `rank`) of every evaluation; Recall@K = mean(rank < K).
* `space.yaml`: the search space (for the importance table's distributions).

Missing ranks are not an error (an older study, an interrupted one): the evaluation then carries a
`note` and no bootstrap, and the tables say what their intervals cover.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.metrics import whm
from study.parquet_io import CELL_WEIGHTS_KEY
from study.stats.bootstrap import Cells, bootstrap_recalls, cell_recalls, parse_cell
from study.space import SearchSpace, SpaceError, load_space
from study.table_parts import PARTS_DIR, read_with_parts, unmerged_parts

__all__ = ["DONE", "Configuration", "Evaluation", "Study", "check_weights", "read_study",
           "read_trials", "trial_whm"]

DONE = "TERMINATED"
RANK_COLUMNS = ("seed", "epoch", "dataset", "split", "query", "rank")
_AGREE = 1e-6  # recall from ranks vs the recall columns


def check_weights(cell_weights: Mapping[str, float], *, source: str = "cell_weights") -> None:
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
    """WHM of one row over the cells with weight > 0, read from its `recall/<cell>` columns."""
    check_weights(cell_weights)
    cells = [cell for cell, weight in cell_weights.items() if weight > 0]
    columns = [f"recall/{cell}" for cell in cells]
    missing = [c for c in columns if c not in row or _is_null(row[c])]
    if missing:
        who = row.get("config_id", row.get("trial_id", "?"))
        raise ValueError(f"{who} (seed {row.get('seed', '?')}): no recall in {missing}, which the "
                         f"cell weights {dict(cell_weights)} score")
    return whm([float(row[c]) for c in columns], [float(cell_weights[c]) for c in cells])


def read_trials(study_dir: str | Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """`<study_dir>/trials.parquet` with the rows of trials that ended since it was last rebuilt
    (`study.table_parts`) -> (rows, cell weights); errors name the file and the fix."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study directory")
    path = study_dir / "trials.parquet"
    if not path.is_file() and not unmerged_parts(study_dir):
        raise FileNotFoundError(f"{path}: not found; the study driver (python -m study.run) "
                                "writes it as trials finish")
    try:
        table, rows = read_with_parts(study_dir, "trials")
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path} or its parts in {study_dir / PARTS_DIR}: not a readable Parquet file "
                         f"({error})") from None
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
    check_weights(weights, source=f"{path} {CELL_WEIGHTS_KEY.decode()!r}")
    return rows, {cell: float(w) for cell, w in weights.items()}


@dataclass(frozen=True)
class Configuration:
    """Every hyperparameter but the seed; scheduled whole, its seeds scored at one `epoch`."""

    config_id: str
    role: str  # "searched" | "baseline"
    baseline_id: str | None  # its matched baseline (same configuration, regularizer none)
    seeds: tuple[int, ...]
    epoch: int | None  # None: its seeds were scored at different epochs (an older trials.parquet)
    max_epochs: int | None
    stopped_early: bool
    params: Mapping[str, Any]  # "param/<name>" -> value; None where a conditional one is inactive


@dataclass(frozen=True)
class Evaluation:
    """One configuration at one epoch, on the seeds it has there.

    recalls: (n_seeds, n_cells) per seed, in `Cells.names` order.
    draws: (n_draws, n_seeds, n_cells) the recalls on resampled test queries (`bootstrap_recalls`),
        None without ranks; `queries[(dataset, split)]` are the query indices the ranks cover.
    note: why ranks are missing or disagree with the recall columns; "" when all is well.
    """

    config_id: str
    epoch: int | None
    seeds: tuple[int, ...]
    recalls: np.ndarray
    draws: np.ndarray | None
    queries: Mapping[tuple[str, str], np.ndarray] | None
    note: str = ""

    def select(self, seeds: Sequence[int]) -> "Evaluation":
        at = [self.seeds.index(s) for s in seeds]
        return Evaluation(self.config_id, self.epoch, tuple(seeds), self.recalls[at],
                          None if self.draws is None else self.draws[:, at], self.queries, self.note)


@dataclass(frozen=True)
class Study:
    """A study directory, read. `evaluation(config_id, epoch)` reads (once) the recalls and ranks
    of a configuration at an epoch and bootstraps its test queries."""

    directory: Path
    rows: pd.DataFrame  # every row of trials.parquet
    cells: Cells
    cell_weights: Mapping[str, float]
    configurations: Mapping[str, Configuration]  # the finished ones, in file order
    history: pd.DataFrame | None
    space: SearchSpace | None
    notes: tuple[str, ...] = ()
    n_draws: int = 1000
    seed: int = 0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _groups: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.rows.columns if c.startswith("param/")]

    def evaluation(self, config_id: str, epoch: int | None) -> Evaluation | None:
        """None when no recalls of `config_id` at `epoch` are stored anywhere."""
        key = (config_id, epoch)
        if key not in self._cache:
            self._cache[key] = self._evaluate(self.configurations[config_id], epoch)
        return self._cache[key]

    def _recalls(self, table: str) -> dict[Any, tuple[tuple[int, ...], np.ndarray, list[str]]]:
        """Per configuration (table "rows": its finished rows, key its id) or per configuration and
        epoch ("history", key (id, epoch)): (seeds, recalls (n_seeds, n_cells) in `Cells` order, the
        recall columns with no value there); a seed's first row counts. Built in one pass over the
        table, so that ranking N configurations reads it in O(N), not O(N^2)."""
        if table in self._groups:
            return self._groups[table]
        frame = self.rows[self.rows["status"] == DONE] if table == "rows" else self.history
        keys = ["config_id"] if table == "rows" else ["config_id", "epoch"]
        frame = frame.sort_values([*keys, "seed"], kind="stable").drop_duplicates([*keys, "seed"])
        columns = [f"recall/{c}" for c in self.cells.names]
        values = np.full((len(frame), len(columns)), np.nan)
        for j, column in enumerate(columns):
            if column in frame:
                values[:, j] = frame[column].to_numpy(dtype=float, na_value=np.nan)
        found = list(zip(*(frame[k].astype(str) if k == "config_id" else frame[k].astype(int) for k in keys)))
        seeds = frame["seed"].to_numpy(dtype=np.int64)
        groups, start = {}, 0
        for end in range(1, len(found) + 1):
            if end == len(found) or found[end] != found[start]:
                block = values[start:end]
                missing = [c for j, c in enumerate(columns) if np.isnan(block[:, j]).any()]
                key = found[start][0] if table == "rows" else found[start]
                groups[key] = (tuple(int(s) for s in seeds[start:end]), block, missing)
                start = end
        self._groups[table] = groups
        return groups

    def _metric_rows(self, config: Configuration, epoch: int | None):
        """(seeds, recalls, missing columns) of `config` at `epoch`, from trials.parquet at its scored
        epoch, else history.parquet; None when neither has it."""
        if epoch == config.epoch:
            return self._recalls("rows").get(config.config_id)
        if self.history is not None and epoch is not None:
            return self._recalls("history").get((config.config_id, int(epoch)))
        return None

    def _evaluate(self, config: Configuration, epoch: int | None) -> Evaluation | None:
        found = self._metric_rows(config, epoch)
        recalls = None
        seeds = config.seeds
        if found is not None:
            seeds, recalls, missing = found
            if missing:
                source = "trials.parquet" if epoch == config.epoch else "history.parquet"
                raise ValueError(f"{self.directory / source}: configuration {config.config_id} at epoch "
                                 f"{epoch} has no value in {missing}, which the cell weights score; "
                                 "drop those cells' weights or rewrite the file with them")
        ranks, queries, note = self._ranks(config.config_id, epoch, seeds)
        if ranks is not None:
            from_ranks = cell_recalls(ranks, self.cells)
            if recalls is None:
                recalls = from_ranks
            elif np.abs(from_ranks - recalls).max() > _AGREE:
                note = (f"ranks/{config.config_id}.parquet gives recalls up to "
                        f"{np.abs(from_ranks - recalls).max():.3g} away from the recall columns at "
                        f"epoch {epoch}")
        if recalls is None:
            return None
        draws = None if ranks is None else bootstrap_recalls(ranks, self.cells, n_draws=self.n_draws,
                                                             seed=self.seed)
        return Evaluation(config.config_id, epoch, seeds, recalls, draws, queries, note)

    def _ranks(self, config_id: str, epoch: int | None, seeds: tuple[int, ...]):
        """({group: (n_seeds, n_queries) ranks}, {group: query ids}, note); Nones and a note saying
        why when the ranks are not there."""
        path = self.directory / "ranks" / f"{config_id}.parquet"
        if epoch is None:
            why = ("its seeds were scored at different epochs" if "epoch" in self.rows
                   else "trials.parquet has no epoch column")
            return None, None, f"{why}: no ranks to pair, test-set sampling left out"
        if not path.is_file():
            return None, None, f"no ranks/{config_id}.parquet: test-set sampling left out"
        layout = f"one row per (seed, epoch, dataset, split, query) with columns {list(RANK_COLUMNS)}"
        try:
            with open(path, "rb") as stream:  # opened once: the driver may replace it meanwhile (parquet_io)
                missing = [c for c in RANK_COLUMNS if c not in pq.read_schema(stream).names]
                if missing:
                    raise ValueError(f"{path}: lacks columns {missing}; a ranks file holds {layout}")
                stream.seek(0)
                frame = pq.read_table(stream, columns=list(RANK_COLUMNS), filters=[("epoch", "==", epoch)]).to_pandas()
        except (pa.ArrowException, OSError) as error:
            raise ValueError(f"{path}: not a readable ranks file ({error}); it holds {layout}") from None
        ranks, queries = {}, {}
        for group in self.cells.by_group():
            part = frame[(frame["dataset"] == group[0]) & (frame["split"] == group[1])
                         & frame["seed"].isin(seeds)]
            if part.duplicated(["seed", "query"]).any():
                raise ValueError(f"{path}: epoch {epoch}, {group[0]}/{group[1]} holds a (seed, query) "
                                 "twice; each evaluation stores one rank per query")
            table_ = part.pivot(index="seed", columns="query", values="rank")
            absent = sorted(set(seeds) - set(int(s) for s in table_.index))
            if absent or table_.isna().any().any():
                what = f"seeds {absent}" if absent else "the same queries for every seed"
                return None, None, (f"ranks/{config_id}.parquet lacks {what} at epoch {epoch} in "
                                    f"{group[0]}/{group[1]}: test-set sampling left out")
            ranks[group] = table_.loc[list(seeds)].to_numpy(dtype=np.int64)
            queries[group] = table_.columns.to_numpy(dtype=np.int64)
        return ranks, queries, ""


def _configurations(rows: pd.DataFrame, params: list[str], source: Path) -> dict[str, Configuration]:
    done = rows[rows["status"] == DONE]
    fields = [c for c in ("config_id", "seed", "epoch", "role", "baseline_id", "max_epochs", "stopped_early")
              if c in done]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in done[fields + params].to_dict("records"):  # plain records: one pass, not a frame per group
        grouped.setdefault(str(record["config_id"]), []).append(record)
    configs = {}
    for config_id, records in grouped.items():
        seeds = [int(r["seed"]) for r in records]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{source}: configuration {config_id} has seed(s) "
                             f"{sorted({s for s in seeds if seeds.count(s) > 1})} twice; "
                             "trials.parquet holds one row per (configuration, seed)")
        epochs = {int(r["epoch"]) for r in records if not _is_null(r["epoch"])} if "epoch" in done else set()
        first = records[0]
        baseline, max_epochs = first.get("baseline_id"), first.get("max_epochs")
        configs[config_id] = Configuration(
            config_id=config_id, role=str(first.get("role", "searched")),
            baseline_id=None if _is_null(baseline) else str(baseline),
            seeds=tuple(sorted(seeds)), epoch=epochs.pop() if len(epochs) == 1 else None,
            max_epochs=None if _is_null(max_epochs) else int(max_epochs),
            stopped_early=any(not _is_null(r.get("stopped_early")) and bool(r["stopped_early"]) for r in records),
            params={p: None if _is_null(first[p]) else first[p] for p in params})
    return configs


def _left_out(rows: pd.DataFrame) -> list[str]:
    """A note per configuration the ranking leaves out (failed, or not finished yet), with why."""
    notes = []
    for _, row in rows[rows["status"] != DONE].drop_duplicates("config_id").iterrows():
        error = row.get("error")
        why = str(row["status"]).lower() + ("" if _is_null(error) else f": {error}")
        notes.append(f"left out of the ranking: {row['config_id']} ({why})")
    return notes


def read_study(study_dir: str | Path, *, n_draws: int = 1000, seed: int = 0) -> Study:
    """Read a study directory (`read_trials` plus history, ranks and space, each optional)."""
    if n_draws < 2:
        raise ValueError(f"n_draws must be >= 2, got {n_draws}")
    directory = Path(study_dir)
    rows, weights = read_trials(directory)
    source = directory / "trials.parquet"
    rows = rows.copy()
    notes = []
    params = [c for c in rows.columns if c.startswith("param/")]
    for needed in ("seed",):
        if needed not in rows:
            raise ValueError(f"{source}: lacks column {needed!r}; it holds one row per (configuration, seed)")
    if "status" not in rows:
        rows["status"] = DONE
    if "config_id" not in rows:
        keys = [tuple(None if _is_null(v) else v for v in r) for r in rows[params].itertuples(index=False)]
        ids = {key: f"c{i}" for i, key in enumerate(dict.fromkeys(keys))}
        rows["config_id"] = [ids[k] for k in keys]
        notes.append(f"{source} has no config_id column (written before configurations were "
                     "scheduled whole): configurations grouped by their param/* values, no matched baselines")
    notes.extend(_left_out(rows))
    try:
        _, history = read_with_parts(directory, "history")
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{directory / 'history.parquet'} or its parts: not a readable Parquet file ({error})") from None
    if history is not None:
        lacking = [c for c in ("config_id", "seed", "epoch") if c not in history]
        if lacking:
            raise ValueError(f"{directory / 'history.parquet'}: lacks columns {lacking}; it holds one row "
                             "per (config_id, seed, epoch) with the recall/* columns")
    space = None
    if (directory / "space.yaml").is_file():
        try:
            space = load_space(directory / "space.yaml")
        except (SpaceError, OSError) as error:
            notes.append(f"{directory / 'space.yaml'} not read ({error}): importance uses the observed ranges")
    return Study(directory=directory, rows=rows, cells=Cells.from_weights(weights), cell_weights=weights,
                 configurations=_configurations(rows, params, source), history=history, space=space,
                 notes=tuple(notes), n_draws=n_draws, seed=seed)
