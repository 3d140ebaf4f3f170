"""Training-step time of tirg on css with each regulariser, relative to no regulariser, measured in
the same run (issue 5's targets). Runs on CPU or GPU; no Ray needed.

    python bench/regularizer_overhead.py                          # CPU, small_cnn, 64x64 css
    python bench/regularizer_overhead.py --device cuda --image-encoder resnet18 --batch-size 128

Each variant runs `--steps` optimiser steps on the same batch after a warm-up, in several rounds
interleaved across variants (so drift of the machine hits every variant alike); the figure is the
median over rounds of the mean step time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.data import open_dataset  # noqa: E402
from study.budget import Budget  # noqa: E402
from study.feed import BatchFeed  # noqa: E402
from study.worker import SeedRun, seed_run  # noqa: E402

VARIANTS = {  # name -> (hyperparameters, target ratio from issue 5)
    "none": ({}, None),
    "ga isotropic": ({"ga_noise": 1e-3}, 1.05),
    "ga adversarial": ({"ga_strength": 1e-2}, 2.2),
    "ga fgsm": ({"ga_strength": 1e-2, "ga_mode": "fgsm"}, 2.2),
    "dim": ({"dim_weight": 0.1}, 1.3),
    "cmap": ({"cmap_weight": 0.1}, 1.1),
    "mmgrad": ({"mmgrad_weight": 0.1}, 2.5),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run: SeedRun, batch, steps: int) -> float:
    parameters = [p for group in run.optimizer.param_groups for p in group["params"]]
    _sync(run.device)
    began = time.perf_counter()
    for _ in range(steps):
        result = run.objective(run.model, batch)
        run.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        run.objective.after_gradient_sync(parameters, step=run.step, seed=0)
        run.optimizer.step()
        run.step += 1
    _sync(run.device)
    return (time.perf_counter() - began) / steps


def print_profile(name: str, run: SeedRun, batch, device: torch.device, steps: int = 5) -> None:
    """Where a variant's step time goes: operators by self time, and how many kernels it launches
    (on a GPU a small-batch step is often bound by launches, not arithmetic)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        time_steps(run, batch, steps)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    print(f"\nprofile of {name!r}, {steps} steps: {sum(e.count for e in events) // steps} operator calls per step")
    print(events.table(sort_by=sort, row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-encoder", default="small_cnn", choices=["small_cnn", "resnet18"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=Budget.threads_per_worker,
                        help="torch intra-op threads on CPU (default: a trial's, the budget's threads_per_worker)")
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--profile", choices=list(VARIANTS), action="append", default=[],
                        help="also print torch.profiler's top operators for this variant (repeatable)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)  # as a trial's worker does (study/train.py)
    torch.manual_seed(0)
    data = open_dataset("css", scale=args.scale, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    budget = Budget(num_samples=1, epochs=1, image_encoder=args.image_encoder, embed_dim=args.embed_dim,
                    batch_size=args.batch_size, train_eval_queries=200)
    runs = {}
    for name, (params, _) in VARIANTS.items():
        runs[name] = seed_run(data, {"composer": "tirg", "K": 8, **params}, budget, device=device, cache_dir=args.cache_dir)
    share = runs["none"].share
    host = next(iter(BatchFeed(share.images["train"], share.vocab, [data.train.queries[: args.batch_size]])))
    batch = host.to_device(device)
    for run in runs.values():
        time_steps(run, batch, 2)  # warm-up: allocator, cuDNN autotuning, lazy init
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(time_steps(run, batch, args.steps))
    base = statistics.median(times["none"])
    print(f"tirg on css, {args.image_encoder}, batch {args.batch_size}, D={args.embed_dim}, "
          f"{torch.get_num_threads()} thread(s), device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}")
    print(f"{'regulariser':16s} {'ms/step':>9s} {'ratio':>7s} {'target':>7s}")
    for name, (_, target) in VARIANTS.items():
        median = statistics.median(times[name])
        verdict = "" if target is None else ("ok" if median / base <= target else "MISSED")
        target_text = "-" if target is None else f"<={target}"
        print(f"{name:16s} {median * 1000:9.1f} {median / base:7.2f} {target_text:>7s} {verdict}")
    for name in args.profile:
        print_profile(name, runs[name], batch, device)
    t0 = time.perf_counter()
    evaluation = runs["none"].evaluate(rank=0, world=1)
    _sync(device)
    print(f"evaluation of {len(data.test.queries)} test + {len(share.train_sample)} train queries: "
          f"{time.perf_counter() - t0:.2f}s, test R@1 {evaluation['test'].recalls[1]:.3f}")


if __name__ == "__main__":
    main()
