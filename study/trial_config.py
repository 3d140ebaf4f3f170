"""The one place a trial's raw hyperparameter dict is read (STYLE.md section 3).

Tune hands every trial a flat dict such as `{"composer": "tirg", "K": 8, "regularizer": "ga",
"ga_strength": 0.01, "__trial_index__": 1}`. `TrialConfig.from_params` checks it once, rejecting
unknown keys with the valid names, and nothing after it reads the raw dict. `validate_space` runs
the same conversion over every choice of a space before Ray starts, and checks what the budget's
encoders can give every configuration (`check_encoders`), so a bad file fails in `study.run`, not
in trial 137.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from models.composers import COMPOSERS, composer_class
from models.encoders import ENCODERS, encoder_class
from models.regularizers import REGULARIZERS, regularizer_configs, regularizer_param_names, requirements

from study.config_keys import BASELINE_OF, CONFIG_ID, CONTROL_KEYS, DEFAULT_CONFIG_ID, ROLE, UNTIL  # noqa: F401 (imported from here too)
from study.space import CLASSIFY_SPLIT, Budget, SearchSpace, SpaceError

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
    config_id: str = DEFAULT_CONFIG_ID  # stable across the Tune trials that train this configuration
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
            config_id=str(control.get(CONFIG_ID, DEFAULT_CONFIG_ID)), until=until,
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
    check_encoders(space, budget)
    if space.split_weights.get(CLASSIFY_SPLIT, 0) > 0 and budget.cached_features:
        raise SpaceError(f"{space.path}: `splits: {{{CLASSIFY_SPLIT}: ...}}` classifies unseen compositions by running "
                         "the image encoder, which trials on cached frozen features never run; set the budget's "
                         "`feature_cache: false` or drop the split")


def check_encoders(space: SearchSpace, budget: Budget) -> None:
    """Refuse, before Ray starts, what the budget's encoders cannot give a configuration of the space:
    an unknown encoder or an unusable weights file; word token ids for composers that read them (CLIP's
    text side gives BPE pieces); and with cached frozen features (`encoder_lr_factor: 0`,
    `feature_cache: true`) conv maps, pixels to differentiate and token ids (models/feature_needs.py),
    and train-time augmentation."""
    from models.feature_needs import cached_feature_refusals  # builds tiny models: only needed here

    if budget.image_encoder not in ENCODERS:
        raise SpaceError(f"{space.path}: budget: unknown image_encoder {budget.image_encoder!r}; known: "
                         f"{ENCODERS.names()}")
    encoders = encoder_class(budget.image_encoder)
    if budget.image_weights is not None:
        try:  # built once here, so a missing or mismatched file fails now rather than in every trial
            ENCODERS.build(budget.image_encoder, embed_dim=budget.embed_dim, weights=budget.image_weights)
        except (OSError, ValueError) as error:
            raise SpaceError(f"{space.path}: budget: image_weights: {error}") from None
    cached = "with frozen encoders on cached features (encoder_lr_factor: 0, feature_cache: true)"
    if budget.cached_features:
        augmented = [entry.key for entry in space.datasets if entry.augment != "none"]
        if augmented:
            raise SpaceError(f"{space.path}: dataset {augmented[0]!r} has `augment`, which changes the images at every "
                             f"step, but {cached} each image is embedded once; use augment: none, or set "
                             "feature_cache: false to run the frozen encoders at every step")
    for config in _configurations(space):
        reasons = []
        if composer_class(config.composer).needs_tokens and not encoders.word_tokens:
            reasons.append(f"composer {config.composer!r} reads word ids (needs_tokens), which the text side of "
                           f"{budget.image_encoder!r} does not give (CLIP's tokenizer gives BPE pieces)")
        elif budget.cached_features:
            reasons += [f"{reason} ({cached})" for reason in cached_feature_refusals(config.composer, config.regularizers)]
        if reasons:
            fix = ("set feature_cache: false (the frozen encoders then run at every step) or train the encoders "
                   "(encoder_lr_factor > 0)" if budget.cached_features else "use small_cnn or resnet18")
            raise SpaceError(f"{space.path}: {'; '.join(reasons)}; restrict it with a `when:` condition, drop it "
                             f"from the space, or {fix}")


def _configurations(space: SearchSpace) -> list[TrialConfig]:
    """Every combination of the space's choices, numeric parameters at their upper bound (where a
    weight is largest and so switched on), as TrialConfigs."""
    from study.space import grid_points

    probe = SearchSpace(**{**space.__dict__, "parameters": tuple(
        p if p.kind == "choice" else type(p)(p.name, "choice", values=(p.high,), when=p.when, line=p.line)
        for p in space.parameters
    )})
    return [TrialConfig.from_params(point, seeds=space.seeds, where=str(space.path)) for point in grid_points(probe)]


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
    dataset_caps = {key: dataset_capabilities(data) for key, data in datasets.items()}
    for config in _configurations(space):
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
