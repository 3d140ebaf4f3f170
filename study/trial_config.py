"""The one place a trial's raw hyperparameter dict is read (STYLE.md section 3).

Tune hands every trial a flat dict such as `{"composer": "tirg", "K": 8, "regularizer": "ga",
"ga_strength": 0.01, "__trial_index__": 1}`. `TrialConfig.from_params` checks it once, rejecting
unknown keys with the valid names, and nothing after it reads the raw dict. `validate_space` runs
the same conversion over every choice of a space before Ray starts, so a bad file fails in
`study.run`, not in trial 137.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from models.composers import COMPOSERS, composer_class
from models.regularizers import REGULARIZERS, regularizer_configs, regularizer_param_names, requirements

from study.space import Budget, SearchSpace, SpaceError

# Keys the searchers (study/search.py) add to a trial's config beside the hyperparameters:
CONFIG_ID = "__config__"  # the configuration's id, stable across the trials that train it ("c0003", "b0001")
UNTIL = "__until__"  # train up to this epoch (a rung of the sync scheduler; the budget's epochs otherwise)
ROLE = "__role__"  # "searched" (proposed by the sampler) or "baseline" (a matched baseline, A.9)
BASELINE_OF = "__baseline__"  # for a searched configuration with a regulariser: its matched baseline's id
CONTROL_KEYS = (CONFIG_ID, UNTIL, ROLE, BASELINE_OF)
NO_REGULARIZER = "none"


@dataclass(frozen=True)
class TrialConfig:
    """One configuration and every seed it trains (a Tune trial trains them all, A.9)."""

    composer: str
    k: int | Literal["batch"]  # candidates per group (A.3); "batch" = the (global) batch size (classification)
    seeds: tuple[int, ...]
    regularizer: str  # the selector the space searched over ("none", "ga", "dim"); recorded for results
    regularizers: tuple[Any, ...]  # each enabled regulariser's frozen Config
    params: tuple[tuple[str, Any], ...]  # the sampled hyperparameters, for results and TensorBoard
    config_id: str = "c0000"  # stable across the Tune trials that train this configuration
    until: int | None = None  # train up to this epoch; None: the budget's epochs
    role: Literal["searched", "baseline"] = "searched"
    baseline_of: str | None = None  # the config id of this configuration's matched baseline

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, seeds: tuple[int, ...], where: str = "trial") -> "TrialConfig":
        raw = dict(params)
        control = {key: raw.pop(key) for key in CONTROL_KEYS if key in raw}
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ValueError(f"{where}: seeds must be a non-empty tuple of ints, got {seeds!r}")
        regularizer_fields = regularizer_param_names()
        known = {"composer", "K", "regularizer", *regularizer_fields}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{where}: unknown hyperparameter(s) {unknown}; valid names: {sorted(known)}")
        composer = raw.get("composer", "tirg")
        if composer not in COMPOSERS:
            raise ValueError(f"{where}: unknown composer {composer!r}; known: {COMPOSERS.names()}")
        k = raw.get("K", 2)
        if k != "batch" and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
            raise ValueError(f"{where}: K must be an integer >= 2 or `batch` (candidates per group, A.3), got {k!r}")
        selector = raw.get("regularizer", NO_REGULARIZER)
        if selector != NO_REGULARIZER and selector not in REGULARIZERS:
            raise ValueError(
                f"{where}: unknown regularizer {selector!r}; known: {[NO_REGULARIZER, *REGULARIZERS.names()]}"
            )
        configs = regularizer_configs({n: v for n, v in raw.items() if n in regularizer_fields})
        until = control.get(UNTIL)
        if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 1):
            raise ValueError(f"{where}: {UNTIL} must be a positive epoch, got {until!r}")
        return cls(
            composer=composer, k=k, seeds=tuple(seeds), regularizer=selector,
            regularizers=tuple(configs), params=tuple(sorted(raw.items())),
            config_id=str(control.get(CONFIG_ID, "c0000")), until=until,
            role=control.get(ROLE, "searched"), baseline_of=control.get(BASELINE_OF),
        )

    def candidates(self, batch_size: int) -> int:
        return batch_size if self.k == "batch" else self.k


def validate_space(space: SearchSpace, budget: Budget) -> None:
    """Convert each value of each parameter (numeric ones at their bounds), with the values its
    condition needs, into a TrialConfig, so an error names that parameter's line; then check K
    against the batch size (A.3: K > B is a configuration error)."""
    from study.data import known_datasets  # the data package is heavy; only needed here

    for entry in space.datasets:
        if entry.root is None and entry.name not in known_datasets():
            raise SpaceError(f"{space.path}: unknown dataset {entry.name!r}; known: {known_datasets()}")
    for p in space.parameters:
        values = p.values if p.kind == "choice" else (p.low, p.high)
        for value in values:
            value = int(value) if p.kind == "int" else value
            where = f"{space.path}, line {p.line}"
            try:
                config = TrialConfig.from_params({**dict(p.when), p.name: value, **space.fixed},
                                                 seeds=space.seeds, where=where)
            except ValueError as error:
                raise SpaceError(str(error)) from None
            if config.candidates(budget.batch_size) > budget.batch_size:
                raise SpaceError(
                    f"{where}: K={config.k} is larger than the batch size {budget.batch_size} of this budget; "
                    "K counts the positive plus K-1 in-batch negatives, so lower K or raise batch_size"
                )


def dataset_capabilities(data) -> frozenset[str]:
    """What a dataset gives a composer or regulariser: "regions" when every query carries the
    region its text changes (MMGrad), "single_word_text" when every text is one word (Attribute
    as Operator: MIT-States-style data)."""
    queries = [*data.train.queries, *data.test.queries]
    capabilities = set()
    if queries and all(q.region is not None for q in queries):
        capabilities.add("regions")
    if queries and all(len(q.text.split()) == 1 for q in queries):
        capabilities.add("single_word_text")
    return frozenset(capabilities)


def composer_capabilities(composer: str) -> frozenset[str]:
    cls = composer_class(composer)
    return frozenset(
        name for name, used in (("image_in_query", cls.uses_image), ("text_in_query", cls.uses_text)) if used
    )


def check_capabilities(space: SearchSpace, datasets: Mapping[str, Any]) -> None:
    """Refuse, before any trial starts, a composer or regulariser the space can pair with a dataset
    or composer that cannot provide what it needs (regions, a single-word text, an image in the query)."""
    from study.space import grid_points

    dataset_caps = {key: dataset_capabilities(data) for key, data in datasets.items()}
    probe = SearchSpace(**{**space.__dict__, "parameters": tuple(
        p if p.kind == "choice" else type(p)(p.name, "choice", values=(p.high,), when=p.when, line=p.line)
        for p in space.parameters
    )})
    for point in grid_points(probe):
        config = TrialConfig.from_params(point, seeds=space.seeds, where=str(space.path))
        needs = {f"composer {config.composer!r}": composer_class(config.composer).requires}
        needs.update({f"regularizer {name!r}": reqs for name, reqs in requirements(config.regularizers).items()})
        has_composer = composer_capabilities(config.composer)
        for key, caps in dataset_caps.items():
            for who, required in needs.items():
                missing = sorted(set(required) - caps - has_composer)
                if missing:
                    raise SpaceError(
                        f"{space.path}: {who} needs {missing}, which dataset {key!r} with composer "
                        f"{config.composer!r} cannot provide; restrict it with a `when:` condition or "
                        "drop the dataset or composer from the space"
                    )
