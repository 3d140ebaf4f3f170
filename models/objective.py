"""The training objective: NL-scaled K-candidate matching loss (methods A.3) plus the enabled
regularisers (A.4-A.7), summed in this one place and logged by name."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from models.batch import Batch, Outputs
from models.distributed import gather_with_grad
from models.losses import check_k, matching_loss
from models.model import CirModel
from models.regularizers import REGULARIZERS, RegularizerConfig

__all__ = ["ObjectiveConfig", "Objective", "StepResult"]


@dataclass(frozen=True)
class ObjectiveConfig:
    k: int = 2  # candidates per group: 2 = soft triplet, batch size = batch-based classification
    regularizers: tuple[RegularizerConfig, ...] = ()  # e.g. regularizer_configs(params); disabled ones are skipped

    def __post_init__(self) -> None:
        check_k(self.k)
        object.__setattr__(self, "regularizers", tuple(self.regularizers))
        names = []
        for config in self.regularizers:
            if not isinstance(config, RegularizerConfig):
                raise ValueError(f"ObjectiveConfig.regularizers holds RegularizerConfig objects "
                                 f"(see models.regularizers.regularizer_configs), got {config!r}")
            if config.name in names:
                raise ValueError(f"regularizer {config.name!r} configured twice in ObjectiveConfig.regularizers")
            names.append(config.name)

    def check_batch_size(self, batch_size: int) -> None:
        """K > B is a configuration error: call this where the batch size is known, before training."""
        check_k(self.k, batch_size)


@dataclass
class StepResult:
    loss: Tensor  # scalar, with graph: the total to back-propagate
    # "loss/match", "loss/<regulariser>", "loss/total", "model/scale", regulariser logs: detached 0-dim
    # tensors on the model's device, so a training loop can sum them without waiting for the device
    device_logs: dict[str, Tensor | float]
    terms: dict[str, Tensor] = field(default_factory=dict)  # the named loss terms, with graph
    outputs: Outputs | None = None  # what the model returned, for callers that log more

    @property
    def logs(self) -> dict[str, float]:
        """The logs as floats (one device sync)."""
        return to_floats(self.device_logs)


def to_floats(logs: dict[str, float | Tensor]) -> dict[str, float]:
    """Logs with 0-dim tensors -> floats, with one device sync per device instead of one per tensor."""
    pending: dict[torch.device, list[str]] = {}
    for name, value in logs.items():
        if isinstance(value, Tensor):
            pending.setdefault(value.device, []).append(name)
    floats = {name: float(value) for name, value in logs.items() if not isinstance(value, Tensor)}
    for names in pending.values():
        values = torch.stack([logs[name].detach().reshape(()).float() for name in names]).tolist()
        floats.update(zip(names, values))
    return {name: floats[name] for name in logs}  # keep the order


class Objective(nn.Module):
    def __init__(self, config: ObjectiveConfig, *, embed_dim: int, mid_channels: int) -> None:
        super().__init__()
        self.config = config
        # Only enabled regularisers are built, so a weight of 0 leaves the loss and gradients untouched.
        self.regularizers = nn.ModuleDict({
            c.name: REGULARIZERS.build(c.name, config=c, embed_dim=embed_dim, mid_channels=mid_channels)
            for c in config.regularizers if c.enabled
        })
        self.needs_input_grad = any(r.needs_input_grad for r in self.regularizers.values())

    def match(self, model: CirModel, outputs: Outputs, generator: torch.Generator | None = None) -> Tensor:
        """Per-query matching loss (B,) on NL-scaled query and target features."""
        return self._match_features(model, outputs.query, outputs.target, generator)

    def _match_features(self, model: CirModel, query: Tensor, target: Tensor,
                        generator: torch.Generator | None) -> Tensor:
        # Negatives from the global batch: every rank's targets, with their gradient (models/distributed.py).
        targets, offset = gather_with_grad(model.norm(target))  # (G, D)
        return matching_loss(model.norm(query), targets, k=self.config.k, generator=generator, offset=offset,
                             reduction="none")

    def forward(self, model: CirModel, batch: Batch, *, generator: torch.Generator | None = None) -> StepResult:
        if self.needs_input_grad and not batch.reference.requires_grad:
            # A leaf copy: the caller's tensor is left as it was.
            batch = replace(batch, reference=batch.reference.detach().requires_grad_(True))
        outputs = model(batch)
        per_query = self.match(model, outputs, generator)  # (B,)
        losses: dict[str, Tensor] = {"loss/match": per_query.mean()}
        logs: dict[str, float | Tensor] = {}

        def rematch(other: Batch) -> Tensor:
            if other.target is batch.target and other.tokens is batch.tokens and other.lengths is batch.lengths:
                # Only the reference changed (GA's FGSM pass): the target features would come out the same,
                # so reuse them instead of a second target forward and backward.
                query = model.compose(other.reference, other.tokens, other.lengths)
                return self._match_features(model, query, outputs.target, generator)
            return self.match(model, model(other), generator)

        for name, regularizer in self.regularizers.items():
            terms = regularizer(outputs, per_query, model=model, batch=batch, rematch=rematch)
            clash = (terms.losses.keys() | terms.logs.keys()) & (losses.keys() | logs.keys())
            if clash:
                raise RuntimeError(f"regularizer {name!r} reuses the names {sorted(clash)}")
            losses.update(terms.losses)
            logs.update(terms.logs)
        total = losses["loss/match"]
        for name, term in losses.items():
            if name != "loss/match":
                total = total + term
        logs.update({name: term.detach() for name, term in losses.items()})
        logs["loss/total"] = total.detach()
        logs["model/scale"] = model.norm.scale.detach()
        return StepResult(loss=total, device_logs=logs, terms=losses, outputs=outputs)

    def after_gradient_sync(self, parameters: Iterable[nn.Parameter], *, step: int,
                            seed: int) -> dict[str, float | Tensor]:
        """Run after the gradient all-reduce and before optimizer.step(): GA's isotropic noise (else no-op).
        Logs may be 0-dim device tensors (no sync)."""
        parameters = list(parameters)
        logs: dict[str, float | Tensor] = {}
        for regularizer in self.regularizers.values():
            logs.update(regularizer.after_gradient_sync(parameters, step=step, seed=seed))
        return logs
