"""What a study spends and how each trial computes: the `budgets:` of a search-space file, and the
dataset entries of its `datasets:` list. Both are frozen and checked on construction, so a bad value
fails while the space is loaded, before Ray starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

AUGMENTS = ("none", "flip", "crop_flip")  # train-time augmentation of a dataset's images (feed.py)
PRECISIONS = ("fp32", "bf16")
SCHEDULERS = ("asha", "sync")  # asha: asynchronous (Ray's ASHA); sync: successive halving by rungs


@dataclass(frozen=True)
class Budget:
    """How much compute one study spends; `default` must fit a 2-core machine in 15 minutes.

    `batch_size` is the GLOBAL batch: with `workers_per_trial` = W each rank takes batch_size / W
    queries per step and the matching loss draws its negatives from all batch_size targets, so K and
    `batch` mean the same thing at any worker count."""

    epochs: int  # the scheduler's max_t, in rounds over every dataset of the study
    num_samples: int | None = None  # configurations Optuna proposes (each trains every seed); a grid runs all
    seeds: int | None = None  # overrides the space's seeds with 0..seeds-1 (a smaller smoke run)
    grace_period: int = 1  # epochs before a configuration may be stopped (first rung)
    reduction_factor: int = 4  # eta: a rung keeps 1/eta of the configurations (ASHA and sync)
    generation_size: int | None = None  # sync scheduler: configurations proposed per generation; None = all
    scale: float = 0.05  # generated-dataset size, 1.0 = the real dataset's size
    image_size: int | None = None  # square side for every dataset without its own; None: 224 real, native generated
    # The encoders, image and text together (models/encoders.py ENCODERS): small_cnn / resnet18 with TIRG's
    # LSTM over the training vocabulary, or clip_rn50 / clip_vit_b32 / clip_tiny with CLIP's text tower and
    # tokenizer (models/clip.py). Checked against the registry by study.trial_config.validate_space.
    image_encoder: str = "small_cnn"
    # A local weights file (nothing is downloaded): a torchvision resnet18 state dict, or a checkpoint of the
    # CLIP architecture (open_clip state dict or training checkpoint, .safetensors, OpenAI's RN50.pt / ViT-B-32.pt)
    image_weights: str | None = None
    embed_dim: int = 128  # the width of small_cnn / resnet18 / LSTM heads; CLIP works in its own (1024 RN50, 512 ViT-B/32)
    # The encoders' learning rate as a fraction of `lr`: 1 trains them with the composer, a value in (0, 1)
    # fine-tunes them slower, 0 freezes them (eval mode, no gradient; CLIP4Cir's combiner training).
    encoder_lr_factor: float = 1.0
    # With frozen encoders: embed every image and text once into the node's cache and train only the composer
    # on those features (true; study/feature_cache.py), or run the frozen encoders at every step (false:
    # what train-time augmentation, GA's input gradient and conv-map composers need).
    feature_cache: bool = True
    batch_size: int = 32  # global, over all workers of a trial
    lr: float = 0.01
    weight_decay: float = 1e-6
    max_concurrent: int = 2
    workers_per_trial: int = 1
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 0.0
    # intra-op threads of each worker: set here, not by where Ray places the worker, because the thread
    # count changes float results (tirg on css, seed 0, 2 epochs: R@1 8.3 with 2 threads, 10.4 with 1)
    threads_per_worker: int = 1
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast on CUDA
    channels_last: bool = False  # CUDA memory format for the image encoder
    sync_batchnorm: bool = False  # batch-norm statistics over all ranks (CUDA); default: per rank
    trial_cpus: float = 0.5  # the Tune function that drives one TorchTrainer
    train_eval_queries: int = 500  # fixed sample of training queries for train recall (A.8)
    max_steps_per_epoch: int | None = None  # caps an epoch on huge datasets; None = full pass
    # Training steps of the decoder that draws the best configuration's composed features as images at the
    # end of a study with CSS (study/reconstruct.py; about 0.12 CPU-s a step); 0 draws none. Smoke budgets
    # take a few, so the picture's path is exercised without the end of a tiny study costing its trials' time.
    reconstruction_steps: int = 500

    def __post_init__(self) -> None:
        counts = ("epochs", "grace_period", "embed_dim", "batch_size", "max_concurrent", "workers_per_trial",
                  "train_eval_queries", "num_samples", "seeds", "max_steps_per_epoch", "threads_per_worker",
                  "generation_size", "image_size")
        for name in counts:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        steps = self.reconstruction_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"`reconstruction_steps` must be an integer >= 0 (0 draws no picture), got {steps!r}")
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, int) \
                or self.reduction_factor < 2:
            raise ValueError(f"`reduction_factor` must be an integer >= 2, got {self.reduction_factor!r}")
        for name in ("scale", "lr", "cpus_per_worker", "trial_cpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"`{name}` must be a positive number, got {value!r}")
        for name in ("weight_decay", "gpus_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
        if not isinstance(self.image_encoder, str) or not self.image_encoder:
            raise ValueError(f"`image_encoder` must name an encoder, e.g. small_cnn or clip_rn50, got {self.image_encoder!r}")
        if self.image_weights is not None and (not isinstance(self.image_weights, str) or not self.image_weights):
            raise ValueError(f"`image_weights` must be the path of a local weights file, got {self.image_weights!r}")
        factor = self.encoder_lr_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor <= 1:
            raise ValueError(f"`encoder_lr_factor` must be a number in [0, 1] (0 freezes the encoders, 1 trains them "
                             f"at `lr`), got {factor!r}")
        if self.scale > 1:
            raise ValueError(f"`scale` is a fraction of the real dataset's size, at most 1.0, got {self.scale}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("channels_last", "sync_batchnorm", "feature_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false, got {getattr(self, name)!r}")
        if self.batch_size % self.workers_per_trial:
            raise ValueError(
                f"`batch_size` {self.batch_size} is the global batch and must split evenly over "
                f"`workers_per_trial` {self.workers_per_trial}; use a multiple of {self.workers_per_trial}"
            )

    @property
    def frozen_encoders(self) -> bool:
        return self.encoder_lr_factor == 0

    @property
    def cached_features(self) -> bool:
        """Trials train on the features the frozen encoders gave once (study/feature_cache.py)."""
        return self.frozen_encoders and self.feature_cache

    @property
    def rank_batch_size(self) -> int:
        """Queries each data-parallel rank takes per step."""
        return self.batch_size // self.workers_per_trial

    def rungs(self) -> tuple[int, ...]:
        """The epochs at which configurations are compared and the weaker stopped: grace_period,
        grace_period * eta, ... below `epochs`, then `epochs` (ASHA's milestones; the sync scheduler's rungs)."""
        rungs, epoch = [], min(self.grace_period, self.epochs)
        while epoch < self.epochs:
            rungs.append(epoch)
            epoch *= self.reduction_factor
        return (*rungs, self.epochs)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    weight: float = 1.0
    root: str | None = None  # a real download; None = generated by cirstudy
    options: tuple[tuple[str, Any], ...] = ()  # loader options, e.g. (("category", "dress"),) for fashioniq
    image_size: int | None = None  # square side; None: the budget's, else 224 for real layouts, native generated
    augment: Literal["none", "flip", "crop_flip"] = "none"  # train-time only; TIRG uses none

    def __post_init__(self) -> None:
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size < 8):
            raise ValueError(f"dataset {self.key}: `image_size` must be an integer >= 8, got {self.image_size!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"dataset {self.key}: `augment` must be one of {list(AUGMENTS)}, got {self.augment!r}")

    @property
    def key(self) -> str:
        """The dataset's name in metrics and WHM cells: `fashioniq-dress` for a FashionIQ category."""
        return "-".join([self.name, *(str(value) for _, value in self.options)])
