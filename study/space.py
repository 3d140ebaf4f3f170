"""Search-space files (`search_spaces/*.yaml`): load, validate, and turn into an Optuna space.

A space says what a study asks: which hyperparameters vary (with conditions: `ga_strength` exists
only when `regularizer` is `ga`), on which datasets, how the WHM weighs each cell (A.9 of
methods.md), how many seeds each configuration gets, and the budgets (`smoke`, `default`, `paper`).
Every error names the file, the line and the fix, and is raised before Ray starts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from study.budget import Budget, DatasetEntry

__all__ = ["BUDGET_NAMES", "Budget", "DatasetEntry", "Parameter", "SearchSpace", "SpaceError", "cell_weights",
           "define_by_run", "grid_points", "load_space"]

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
BUDGET_NAMES = ("smoke", "default", "paper")


class SpaceError(ValueError):
    """A search-space file is malformed; the message says where and how to fix it."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: Literal["choice", "uniform", "loguniform", "int"]
    values: tuple[Any, ...] = ()  # for choice
    low: float | None = None
    high: float | None = None
    when: tuple[tuple[str, Any], ...] = ()  # all must hold for the parameter to exist
    line: int = 0

    def active(self, sampled: Mapping[str, Any]) -> bool:
        return all(sampled.get(name) == value for name, value in self.when)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file; `for_budget` gives the space a budget actually runs."""

    name: str
    path: Path
    question: str  # the file's leading comment: what the study answers
    datasets: tuple[DatasetEntry, ...]
    split_weights: Mapping[str, float]
    k_weights: Mapping[int, float] | None  # None: every K each dataset reports, weight 1 (A.9)
    seeds: tuple[int, ...]
    parameters: tuple[Parameter, ...]
    fixed: Mapping[str, Any]
    budgets: Mapping[str, Budget]
    data_seed: int = 0
    optuna_seed: int = 0
    metric: str = "whm"
    sampler: str = "tpe"  # "tpe": Optuna proposes; "grid": every combination (grid_points)
    # "matched": every configuration with a regulariser also runs with `regularizer: none` and all else
    # equal (its matched baseline, shared); "none": only what the sampler proposes
    baseline: str = "none"

    def for_budget(self, budget: Budget) -> "SearchSpace":
        return replace(self, seeds=tuple(range(budget.seeds))) if budget.seeds else self

    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters] + list(self.fixed)

    def cell_weights(self, recall_ks: Mapping[str, tuple[int, ...]]) -> dict[str, float]:
        return cell_weights(self.datasets, self.split_weights, self.k_weights, recall_ks)


CLASSIFY_SPLIT = "classify"  # the pseudo-split of composition classification (study/classify.py)
COMPOSITIONS = ("split", "compositions")  # the loader option of mitstates' (and states') composition split


def classifies(entry: DatasetEntry) -> bool:
    """Whether trials classify the unseen compositions of this dataset each epoch: it is opened with
    mitstates' composition split, so `recall/<key>/classify@K` (closed-world top-K accuracy) exists."""
    return COMPOSITIONS in entry.options


def cell_weights(
    datasets: tuple[DatasetEntry, ...], split_weights: Mapping[str, float], k_weights: Mapping[int, float] | None,
    recall_ks: Mapping[str, tuple[int, ...]],
) -> dict[str, float]:
    """WHM weight of every (dataset, split, K) cell, w_d * w_s * w_K (A.9); weight-0 cells are left
    out. `k_weights` None weighs every K a dataset reports 1. A K with weight > 0 that a dataset
    does not report is an error naming the dataset and its K's: it would drop out of the WHM silently.
    Keys read "css/test@1". Split "classify" (top-K accuracy of classifying unseen compositions,
    study/classify.py) makes cells only for the datasets `classifies` holds."""
    cells = {}
    for entry in datasets:
        ks = tuple(recall_ks[entry.key])
        weights = {k: 1.0 for k in ks} if k_weights is None else dict(k_weights)
        missing = sorted(k for k, w in weights.items() if w > 0 and k not in ks)
        if missing:
            raise SpaceError(
                f"`k_weights` weighs recall@{missing} but dataset {entry.key!r} reports only K in {list(ks)}; "
                f"give those K weight 0, or drop `k_weights` to weigh every reported K 1 (methods.md A.9)"
            )
        for split, w_split in split_weights.items():
            if split == CLASSIFY_SPLIT and not classifies(entry):
                continue  # only a composition split has unseen compositions to classify
            for k, w_k in weights.items():
                weight = entry.weight * w_split * w_k
                if weight > 0:
                    cells[f"{entry.key}/{split}@{k}"] = weight
    return cells


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings remember the line of each key (for error messages)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> "_Lined":
    mapping = _Lined()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise SpaceError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    mapping.line = node.start_mark.line + 1
    return mapping


class _Lined(dict):
    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}
        self.line = 0


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _where(path: Path, mapping: Any, key: Any = None) -> str:
    line = getattr(mapping, "lines", {}).get(key) or getattr(mapping, "line", 0)
    return f"{path}, line {line}" if line else str(path)


def _number(path: Path, mapping: Mapping, key: str, *, positive: bool = False) -> float:
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{_where(path, mapping, key)}: `{key}` must be a number, got {value!r}")
    if positive and value <= 0:
        raise SpaceError(f"{_where(path, mapping, key)}: `{key}` must be > 0, got {value!r}")
    return float(value)


def _seed(path: Path, raw: Mapping, key: str) -> int:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpaceError(f"{_where(path, raw, key)}: `{key}` must be an integer >= 0, got {value!r}")
    return value


def _only_keys(path: Path, mapping: Any, allowed: set[str], what: str) -> None:
    if not isinstance(mapping, dict):
        raise SpaceError(f"{_where(path, mapping)}: {what} must be a mapping, got {mapping!r}")
    for key in mapping:
        if key not in allowed:
            raise SpaceError(
                f"{_where(path, mapping, key)}: unknown key {key!r} in {what}; "
                f"valid keys: {sorted(allowed)}"
            )


def _parse_parameter(path: Path, name: str, spec: Any, line: int) -> Parameter:
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpaceError(
            f"{path}, line {line}: parameter {name!r} needs a mapping with `type` "
            "(choice, uniform, loguniform or int), e.g. {type: choice, values: [2, 8]}"
        )
    _only_keys(path, spec, {"type", "values", "low", "high", "when"}, f"parameter {name!r}")
    kind = spec["type"]
    when = spec.get("when", {})
    _only_keys(path, when, set(when) if isinstance(when, dict) else set(), f"`when` of {name!r}")
    conditions = tuple(sorted(when.items()))
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{_where(path, spec, 'type')}: choice {name!r} needs a non-empty `values` list")
        return Parameter(name, "choice", values=tuple(values), when=conditions, line=line)
    if kind not in ("uniform", "loguniform", "int"):
        raise SpaceError(
            f"{_where(path, spec, 'type')}: parameter {name!r} has unknown type {kind!r}; "
            "use choice, uniform, loguniform or int"
        )
    for bound in ("low", "high"):
        if bound not in spec:
            raise SpaceError(f"{_where(path, spec)}: {kind} parameter {name!r} needs `{bound}`")
    low, high = _number(path, spec, "low"), _number(path, spec, "high")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(
            f"{_where(path, spec, 'low')}: `loguniform` needs low > 0, got {spec['low']}; "
            "use `uniform` or a positive low"
        )
    if low >= high:
        raise SpaceError(f"{_where(path, spec, 'high')}: {name!r} needs low < high, got {low} >= {high}")
    return Parameter(name, kind, low=low, high=high, when=conditions, line=line)


def _parse_budget(path: Path, name: str, spec: Any) -> Budget:
    allowed = {f.name for f in fields(Budget)}
    _only_keys(path, spec, allowed, f"budget {name!r}")
    required = {f.name for f in fields(Budget) if f.default is f.default_factory}  # no default
    missing = sorted(required - set(spec))
    if missing:
        raise SpaceError(f"{_where(path, spec)}: budget {name!r} is missing {missing}")
    for key, value in spec.items():  # YAML reads .nan and .inf as floats: refuse them at the field's own line
        if isinstance(value, float) and not math.isfinite(value):
            raise SpaceError(f"{_where(path, spec, key)}: budget {name!r}: `{key}` must be a finite number, got "
                             f"{value!r} (YAML reads .nan and .inf as not-a-number and infinity); write a number")
    try:
        return Budget(**dict(spec))
    except (TypeError, ValueError) as error:
        field = re.match(r"`(\w+)`", str(error))  # Budget's messages start with the field they refuse
        raise SpaceError(f"{_where(path, spec, field and field.group(1))}: budget {name!r}: {error}") from None


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load `search_spaces/<name>.yaml` (or a path) and validate its structure.

    Example: `load_space("ga_vs_dim").budgets["smoke"].num_samples`.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise SpaceError(f"no search space {str(name_or_path)!r} (looked for {path}); known: {known}")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_LineLoader)
    except SpaceError as error:
        raise SpaceError(f"{path}, {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise SpaceError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    top = {"name", "datasets", "splits", "k_weights", "seeds", "parameters", "fixed", "budgets",
           "data_seed", "optuna_seed", "metric", "sampler", "baseline"}
    _only_keys(path, raw, top, "the search space")
    for key in ("datasets", "parameters", "budgets", "seeds"):
        if key not in raw:
            raise SpaceError(f"{path}: missing top-level `{key}`")

    datasets = _parse_datasets(path, raw)

    splits = raw.get("splits", {"test": 1.0, "train": 0.0})
    _only_keys(path, splits, {"train", "test", CLASSIFY_SPLIT}, "`splits`")
    split_weights = {s: _number(path, splits, s) for s in splits}
    if split_weights.get(CLASSIFY_SPLIT, 0) > 0 and not any(classifies(e) for e in datasets):
        raise SpaceError(f"{_where(path, splits, CLASSIFY_SPLIT)}: `splits: {{{CLASSIFY_SPLIT}: ...}}` weighs the "
                         "classification of unseen compositions, which needs a dataset opened with `split: "
                         "compositions` (mitstates or states); add one or drop the split")
    k_weights = None
    if raw.get("k_weights") is not None:
        k_raw = raw["k_weights"]
        _only_keys(path, k_raw, set(k for k in k_raw if isinstance(k, int) and k > 0), "`k_weights` (keys are recall K's)")
        k_weights = {int(k): _number(path, k_raw, k) for k in k_raw}

    seeds = raw["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SpaceError(f"{_where(path, raw, 'seeds')}: `seeds` must be a positive count or a list of ints, got {seeds!r}")

    params_raw = raw["parameters"]
    if not isinstance(params_raw, dict) or not params_raw:
        raise SpaceError(f"{_where(path, raw, 'parameters')}: `parameters` must be a non-empty mapping")
    parameters = [_parse_parameter(path, n, s, params_raw.lines[n]) for n, s in params_raw.items()]
    _check_conditions(path, parameters)

    budgets_raw = raw["budgets"]
    _only_keys(path, budgets_raw, set(BUDGET_NAMES), "`budgets`")
    budgets = {n: _parse_budget(path, n, s) for n, s in budgets_raw.items()}
    sampler = _parse_sampler(path, raw, parameters)
    for name, budget in budgets.items():
        if (budget.num_samples is None) != (sampler == "grid"):
            raise SpaceError(
                f"{_where(path, budgets_raw, name)}: budget {name!r}: "
                + ("a grid runs every combination; remove `num_samples`" if sampler == "grid"
                   else "needs `num_samples` (how many configurations Optuna proposes)")
            )
    fixed = dict(raw.get("fixed", {}) or {})
    baseline = _parse_baseline(path, raw, parameters)
    metric = str(raw.get("metric", "whm"))
    if metric != "whm":
        raise SpaceError(f"{_where(path, raw, 'metric')}: unknown metric {metric!r}; the study metric is `whm` "
                         "(methods.md A.9); weigh datasets, splits and K's with `weight`, `splits` and `k_weights`")
    return SearchSpace(
        name=str(raw.get("name", path.stem)), path=path, question=_leading_comment(text),
        datasets=tuple(datasets), split_weights=split_weights, k_weights=k_weights,
        seeds=tuple(seeds), parameters=tuple(parameters), fixed=fixed, budgets=budgets,
        data_seed=_seed(path, raw, "data_seed"), optuna_seed=_seed(path, raw, "optuna_seed"),
        metric=metric, sampler=sampler, baseline=baseline,
    )


ENTRY_FIELDS = ("name", "weight", "root", "image_size", "augment")  # the rest of an entry: loader options


def _parse_datasets(path: Path, raw: Mapping) -> list[DatasetEntry]:
    """`datasets` is a mapping `{css: {weight: 1}}` or a list `[{name: fashioniq, root: /data/fiq,
    category: dress, image_size: 224, augment: flip}]`; keys other than ENTRY_FIELDS are loader options."""
    entries = raw["datasets"]
    if isinstance(entries, dict):
        entries = [_named(name, spec, entries) for name, spec in entries.items()]
    if not isinstance(entries, list) or not entries:
        raise SpaceError(f"{_where(path, raw, 'datasets')}: `datasets` must map dataset names to "
                         "{weight: ...} or list {name: ..., root: ...} entries")
    datasets, keys = [], set()
    for spec in entries:
        if not isinstance(spec, dict) or "name" not in spec:
            raise SpaceError(f"{_where(path, raw, 'datasets')}: each dataset entry needs a `name`, got {spec!r}")
        weight = _number(path, spec, "weight", positive=True) if "weight" in spec else 1.0
        options = tuple(sorted((k, v) for k, v in spec.items() if k not in ENTRY_FIELDS))
        try:
            entry = DatasetEntry(str(spec["name"]), weight, spec.get("root"), options,
                                 image_size=spec.get("image_size"), augment=spec.get("augment", "none"))
        except ValueError as error:
            raise SpaceError(f"{_where(path, spec)}: {error}") from None
        _check_root(path, spec, entry.key)
        if entry.key in keys:
            raise SpaceError(f"{_where(path, spec)}: dataset {entry.key!r} listed twice")
        keys.add(entry.key)
        datasets.append(entry)
    return datasets


def _check_root(path: Path, spec: Mapping, key: str) -> None:
    """`root:` names a folder. Only a root that exists as something else is refused here: a study's
    stored space.yaml is read again where its datasets are absent (study/tables.py), and opening the
    dataset before Ray starts says when a folder is missing."""
    root = spec.get("root")
    if root is None:
        return
    if not isinstance(root, str) or not root:
        raise SpaceError(f"{_where(path, spec, 'root')}: `root:` of dataset {key} must be the path of the dataset's "
                         f"folder, got {root!r}")
    if Path(root).exists() and not Path(root).is_dir():
        raise SpaceError(f"{root}: not a folder; `root:` of dataset {key} in {_where(path, spec, 'root')} must be "
                         "the dataset's folder")


def _named(name: str, spec: Any, parent: Mapping) -> Mapping:
    named = _Lined()
    named.update(spec or {})
    named["name"] = name
    named.lines, named.line = getattr(spec, "lines", {}), getattr(spec, "line", parent.lines.get(name, 0))
    return named


BASELINES = ("matched", "none")


def _parse_baseline(path: Path, raw: Mapping, parameters: list[Parameter]) -> str:
    """`baseline: matched` is the default where the space samples `regularizer` with `none` among its values."""
    samples_regularizer = any(p.name == "regularizer" and p.kind == "choice" and "none" in p.values and len(p.values) > 1
                              for p in parameters)
    baseline = raw.get("baseline", "matched" if samples_regularizer else "none")
    if baseline not in BASELINES:
        raise SpaceError(f"{_where(path, raw, 'baseline')}: unknown baseline {baseline!r}; use one of {list(BASELINES)}")
    if baseline == "matched" and not any(p.name == "regularizer" for p in parameters):
        raise SpaceError(f"{_where(path, raw, 'baseline')}: `baseline: matched` pairs each regulariser with "
                         "`regularizer: none`, but this space has no `regularizer` parameter; remove `baseline`")
    return baseline


SAMPLERS = ("tpe", "grid")  # grid: every combination of the choices, each once per seed


def _parse_sampler(path: Path, raw: Mapping, parameters: list[Parameter]) -> str:
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SpaceError(f"{_where(path, raw, 'sampler')}: unknown sampler {sampler!r}; use one of {list(SAMPLERS)}")
    if sampler == "grid":
        for p in parameters:
            if p.kind != "choice":
                raise SpaceError(
                    f"{path}, line {p.line}: a `sampler: grid` space needs every parameter to be a `choice`; "
                    f"{p.name!r} is {p.kind}: list its grid values with `type: choice`"
                )
    return sampler


def grid_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Every combination of the choices, conditional parameters included only where active
    (a full factorial design over the conditional tree), in declaration order."""
    points: list[dict[str, Any]] = [{}]
    for p in space.parameters:
        expanded = []
        for point in points:
            if p.active(point):
                expanded += [{**point, p.name: value} for value in p.values]
            else:
                expanded.append(point)
        points = expanded
    return [{**point, **space.fixed} for point in points]


def _check_conditions(path: Path, parameters: list[Parameter]) -> None:
    seen: dict[str, Parameter] = {}
    for parameter in parameters:
        for name, value in parameter.when:
            parent = seen.get(name)
            if parent is None or parent.kind != "choice":
                raise SpaceError(
                    f"{path}, line {parameter.line}: {parameter.name!r} is conditional on {name!r}, "
                    "which must be a `choice` parameter declared above it"
                )
            if value not in parent.values:
                raise SpaceError(
                    f"{path}, line {parameter.line}: {parameter.name!r} needs {name}={value!r}, "
                    f"but {name!r} only takes {list(parent.values)}"
                )
        seen[parameter.name] = parameter


def _leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


class define_by_run:  # noqa: N801 (used like a function; a class so Tune can pickle it with the searcher)
    """The Optuna define-by-run function: conditional parameters are only suggested when active."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial) -> dict[str, Any]:
        sampled: dict[str, Any] = {}
        for p in self.space.parameters:
            if not p.active(sampled):
                continue
            if p.kind == "choice":
                sampled[p.name] = trial.suggest_categorical(p.name, list(p.values))
            elif p.kind == "int":
                sampled[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
            else:
                sampled[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "loguniform")
        return dict(self.space.fixed)  # constants, merged into the config by OptunaSearch
