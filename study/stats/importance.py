"""Which hyperparameters matter for a configuration's seed-mean WHM, per composer (issue 9 item 6):
Optuna's fANOVA (Hutter et al., ICML 2014) and PED-ANOVA (Watanabe et al., IJCAI 2023; its
conditional form handles parameters that exist only under a condition) over the configurations,
each importance normalised to sum to 1 within a composer.

The configurations become trials of an in-memory Optuna study (`optuna.trial.create_trial`), with
the distributions of the search space (`space.yaml` in the study directory; the observed range when
it is absent). fANOVA needs a parameter in every configuration, so a conditional one gets only
PED-ANOVA's number. Below MIN_CONFIGS configurations a composer gets no numbers, and says so.
Optuna's fANOVA needs scikit-learn; without it the fANOVA column is empty and the note says so.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from study.space import Parameter, SearchSpace

__all__ = ["IMPORTANCE_COLUMNS", "MIN_CONFIGS", "importance_table"]

MIN_CONFIGS = 8  # fewer points than this and a random forest or a Parzen estimator says little
IMPORTANCE_COLUMNS = ["composer", "param", "fanova", "ped_anova", "n_configs", "n_active",
                      "ped_anova_quantile", "note"]


def _is_null(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python ones (Optuna's categorical choices must be plain)."""
    return value.item() if isinstance(value, np.generic) else value


def _distribution(name: str, observed: Sequence[Any], parameter: Parameter | None
                  ) -> tuple[BaseDistribution, dict[Any, Any]]:
    """The parameter's distribution, widened to what was observed, and stored value -> trial value
    (a K column stores "2" and "batch" as strings; the space says 2 and "batch")."""
    observed = [_plain(v) for v in observed]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in observed)
    kind = parameter.kind if parameter is not None else ("uniform" if numeric else "choice")
    if kind == "choice":
        choices = list(parameter.values) if parameter is not None else []
        by_text = {str(c): c for c in choices}
        for value in observed:
            if str(value) not in by_text:
                by_text[str(value)] = value
                choices.append(value)
        return CategoricalDistribution(choices), {v: by_text[str(v)] for v in observed}
    values = [float(v) for v in observed]
    low = min(values + ([parameter.low] if parameter is not None and parameter.low is not None else []))
    high = max(values + ([parameter.high] if parameter is not None and parameter.high is not None else []))
    if kind == "int":
        return IntDistribution(int(low), int(high)), {v: int(v) for v in observed}
    log = kind == "loguniform" and low > 0
    return FloatDistribution(low, high, log=log), {v: float(v) for v in observed}


def fanova_available() -> bool:
    return importlib.util.find_spec("sklearn") is not None


def _importances(configs: pd.DataFrame, params: list[str], space: SearchSpace | None,
                 quantile: float, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    by_name = {p.name: p for p in space.parameters} if space is not None else {}
    dists, maps = {}, {}
    for column in params:
        name = column.removeprefix("param/")
        observed = list(dict.fromkeys(v for v in configs[column] if not _is_null(v)))
        dists[name], maps[name] = _distribution(name, observed, by_name.get(name))
    study = optuna.create_study(direction="maximize")
    for _, row in configs.iterrows():
        active = {c.removeprefix("param/"): _plain(row[c]) for c in params if not _is_null(row[c])}
        study.add_trial(optuna.trial.create_trial(
            params={n: maps[n][v] for n, v in active.items()},
            distributions={n: dists[n] for n in active}, value=float(row["whm_mean"])))
    everywhere = [c.removeprefix("param/") for c in params if configs[c].notna().all()]
    fanova = (optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), params=everywhere)
        if everywhere and fanova_available() else {})
    ped = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
        params=[c.removeprefix("param/") for c in params])
    return dict(fanova), dict(ped)


def _fanova_note(found: bool, active: int, n: int) -> str:
    if found:
        return ""
    if not fanova_available():
        return "no fANOVA: Optuna's needs scikit-learn (pip install scikit-learn)"
    return f"conditional (in {active} of {n}): no fANOVA"


def importance_table(configs: pd.DataFrame, space: SearchSpace | None = None, *,
                     group: str = "param/composer", min_configs: int = MIN_CONFIGS,
                     seed: int = 0) -> pd.DataFrame:
    """One row per (composer, varying hyperparameter), most important first within a composer.

    configs: one row per configuration with `whm_mean` and its `param/*` columns (the ranking).
    Columns: `composer` ("(all)" without a `group` column), `param`, `fanova` (NaN for a
    conditional parameter), `ped_anova`, `n_configs`, `n_active` (configurations where the
    parameter exists), `ped_anova_quantile` (the top share PED-ANOVA explains: 10%, raised so that
    at least 5 configurations fall in it, at most 50%), `note`.
    """
    groups = ([("(all)", configs)] if group not in configs
              else [(str(g), part) for g, part in configs.groupby(group, sort=True, dropna=False)])
    rows = []
    for name, part in groups:
        part = part[np.isfinite(part["whm_mean"].to_numpy(dtype=float))]
        params = [c for c in part.columns if c.startswith("param/") and c != group
                  and part[c].dropna().astype(str).nunique() > 1]
        n = len(part)
        base = {"composer": name, "n_configs": n}
        if not params:
            rows.append({**base, "param": "-", "note": "no hyperparameter varies"})
            continue
        if n < min_configs:
            rows.extend({**base, "param": c.removeprefix("param/"), "n_active": int(part[c].notna().sum()),
                         "note": f"too few configurations ({n} < {min_configs})"} for c in params)
            continue
        quantile = min(0.5, max(0.1, 5 / n))
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental and small-sample warnings
                fanova, ped = _importances(part, params, space, quantile, seed)
        finally:
            optuna.logging.set_verbosity(level)
        found = []
        for column in params:
            p = column.removeprefix("param/")
            active = int(part[column].notna().sum())
            found.append({**base, "param": p, "fanova": fanova.get(p, np.nan), "ped_anova": ped.get(p, np.nan),
                          "n_active": active, "ped_anova_quantile": quantile,
                          "note": _fanova_note(p in fanova, active, n)})
        rows.extend(sorted(found, key=lambda r: (-np.nan_to_num(r["fanova"], nan=-1.0),
                                                 -np.nan_to_num(r["ped_anova"], nan=-1.0))))
    table = pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)
    table["n_active"] = table["n_active"].astype("Int64")
    return table
