"""Data parallelism does not change the recipe (issue 9, item 8), checked through the real
all-reduce: two gloo processes each take B queries of a 2B batch and run `study.worker.train_step`
twice; their parameters must equal one process's two steps on the whole 2B batches. The second step
reuses the first one's gradient buffer (study/gradient_mean.py), while the momentum holds the first
step's gradient. This catches a loss whose
negatives come from one rank's share, GA noise added before the all-reduce, a sum where a mean
belongs, and parameters that no rank used getting a zero gradient (and so momentum and weight decay).

The model runs in eval mode: batch-norm becomes a fixed affine map and dropout is off, so the step is
a function of the batch alone (the issue's "model without batch-norm").
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.batch import Batch
from models.model import CirModel, ModelConfig
from models.objective import Objective, ObjectiveConfig
from models.regularizers import regularizer_configs
from study.gradient_mean import GradientMean
from study.worker import train_step

B, VOCAB, SIDE = 4, 7, 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = lambda: torch.randn(2 * B, 3, SIDE, SIDE, generator=g)  # noqa: E731
    lengths = torch.randint(1, 5, (2 * B,), generator=g)
    tokens = torch.randint(1, VOCAB, (2 * B, 4), generator=g) * (torch.arange(4) < lengths[:, None])
    return Batch(reference=images(), tokens=tokens, lengths=lengths, target=images())


def _share(batch: Batch, rank: int, world: int) -> Batch:
    rows = slice(rank * len(batch) // world, (rank + 1) * len(batch) // world)
    return Batch(reference=batch.reference[rows], tokens=batch.tokens[rows], lengths=batch.lengths[rows],
                 target=batch.target[rows])


def _step(composer: str, rank: int, world: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = CirModel(ModelConfig(composer=composer, embed_dim=16, vocab_size=VOCAB)).eval()
    regularizers = regularizer_configs({"regularizer": "ga", "ga_noise": 0.01, "ga_strength": 0.01})
    objective = Objective(ObjectiveConfig(k=3, regularizers=tuple(regularizers)), embed_dim=16,
                          mid_channels=model.image_encoder.mid_channels)
    parameters = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=0.1)
    gradients = GradientMean(parameters, world)
    for step in (0, 1):
        train_step(model, objective, optimizer, _share(_global_batch(1 + step), rank, world), gradients=gradients,
                   generator=torch.Generator().manual_seed(2), step=step, seed=0)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


COMPOSERS = ("tirg", "image_only")  # image_only leaves the text encoder unused


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        parameters = {composer: _step(composer, rank, world) for composer in COMPOSERS}
        if rank == 0:
            torch.save(parameters, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    out = str(tmp_path_factory.mktemp("ranks") / "parameters.pt")
    mp.start_processes(_rank_main, args=(2, _free_port(), out), nprocs=2, start_method="spawn")
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("composer", COMPOSERS)
def test_two_ranks_on_b_plus_b_equal_one_rank_on_2b(composer: str, two_ranks) -> None:
    torch.set_num_threads(1)
    one = _step(composer, rank=0, world=1)
    two = two_ranks[composer]
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-6), name
    torch.manual_seed(0)
    initial = dict(CirModel(ModelConfig(composer=composer, embed_dim=16, vocab_size=VOCAB)).named_parameters())
    text = [n for n in one if n.startswith("text_encoder.")]
    moved = {n for n in text if not torch.equal(one[n], initial[n].detach())}
    if composer == "image_only":
        # the text feeds nothing the loss reads: no gradient, so no noise, momentum or weight decay
        assert not moved
        assert all(torch.equal(two[n], initial[n].detach()) for n in text)
    else:
        assert moved == set(text)
