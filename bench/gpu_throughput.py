"""Training throughput on a GPU at the papers' size (issue 8): tirg + resnet18 at 224 px, batch 128,
samples/s in fp32 and in bf16 + channels_last, and the feed's rate (batches gathered from the node's
image map into pinned memory and copied to the device, study/feed.py) against the rate the training
step consumes them (target: at least 1.5x).

    python bench/gpu_throughput.py                         # CUDA
    python bench/gpu_throughput.py --device cpu --images 256 --size 64 --batch 16 --steps 2   # a smoke run

It writes N JPEGs itself (bench/data_scale.py's photo-like images, 300-700 px) in a Fashion200k
layout, builds the image map at --size (decoded once on all cores), then times, after a warm-up:
  feed     --steps batches through BatchFeed (gather + pin + non_blocking copy + normalise), no model
  fp32     --steps training steps (study.worker.train_step) on batches already on the device
  bf16+cl  the same with autocast(bfloat16) and channels_last
The ratio loader/consumption is feed batches/s over the faster variant's steps/s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_scale import write_images, write_layout  # noqa: E402

from study.budget import Budget  # noqa: E402
from study.data import open_dataset  # noqa: E402
from study.feed import BatchFeed  # noqa: E402
from study.gradient_mean import GradientMean  # noqa: E402
from study.worker import seed_run, train_step  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_feed(run, device: torch.device, steps: list, channels_last: bool) -> float:
    """Batches/s the feed delivers onto the device, normalised, with nothing else running."""
    feed = BatchFeed(run.share.images["train"], run.share.vocab, steps, pin_memory=device.type == "cuda")
    sync(device)
    began = time.perf_counter()
    for host in feed:
        host.to_device(device, channels_last=channels_last)
    sync(device)
    return len(steps) / (time.perf_counter() - began)


def time_training(run, device: torch.device, batches: list, budget: Budget) -> float:
    """Training steps/s on batches already on the device."""
    gradients = GradientMean([p for group in run.optimizer.param_groups for p in group["params"]], world=1)
    dtype = torch.bfloat16 if budget.precision == "bf16" else None
    generator = torch.Generator().manual_seed(0)

    def step(batch) -> None:
        train_step(run.model, run.objective, run.optimizer, batch, gradients=gradients,
                   generator=generator, step=run.step, seed=0, autocast_dtype=dtype)
        run.step += 1

    step(batches[0])  # warm-up: cuDNN autotuning, allocator, lazy init
    sync(device)
    began = time.perf_counter()
    for batch in batches:
        step(batch)
    sync(device)
    return len(batches) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=4096, help="JPEGs in the generated dataset")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU machine, or pass --device cpu for a smoke run", file=sys.stderr)
        raise SystemExit(2)
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        root, images = Path(work) / "fashion200k", Path(work) / "images"
        began = time.perf_counter()
        write_images(images, args.images)
        write_layout(root, images, args.images)
        data = open_dataset("fashion200k", root=root, image_size=args.size)
        base = Budget(epochs=1, image_encoder="resnet18", embed_dim=512, batch_size=args.batch, train_eval_queries=8,
                      gpus_per_worker=1.0 if device.type == "cuda" else 0.0)
        variants = {"fp32": base}
        if device.type == "cuda":  # bf16 autocast is a CUDA option (the CPU's oneDNN LSTM refuses it)
            variants["bf16+cl"] = replace(base, precision="bf16", channels_last=True)
        runs = {name: seed_run(data, {"composer": "tirg", "K": 8}, budget, device=device, cache_dir=work)
                for name, budget in variants.items()}
        print(f"{args.images} JPEGs written and decoded at {args.size} px in {time.perf_counter() - began:.0f} s; "
              f"{len(data.train.queries)} train queries", flush=True)
        queries = list(data.train.queries)
        steps = [queries[(i * args.batch) % (len(queries) - args.batch):][: args.batch] for i in range(args.steps)]
        share = runs["fp32"].share
        hosts = list(BatchFeed(share.images["train"], share.vocab, steps))
        rates = {}
        for name, run in runs.items():
            budget = variants[name]
            batches = [h.to_device(device, channels_last=budget.channels_last) for h in hosts]
            rates[name] = time_training(run, device, batches, budget)
        feed = time_feed(runs["fp32"], device, steps, channels_last=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"tirg + resnet18, {args.size} px, batch {args.batch}, D=512, K=8, device {name}")
    print(f"{'variant':10s} {'steps/s':>8s} {'samples/s':>10s} {'vs fp32':>8s}")
    for variant, rate in rates.items():
        print(f"{variant:10s} {rate:8.2f} {rate * args.batch:10.0f} {rate / rates['fp32']:8.2f}")
    consumption = max(rates.values())
    verdict = "ok" if feed / consumption >= 1.5 else "MISSED"
    print(f"feed: {feed:.2f} batches/s = {feed / consumption:.2f}x the fastest step's consumption (target >= 1.5) {verdict}")


if __name__ == "__main__":
    main()
