"""Real data at 224 px as N grows (issue 8's targets): the node's image map is built once, a later
trial's data is ready in seconds, a training worker's private memory does not grow with N, and
gathering batches from the map outruns the training step.

    python bench/data_scale.py                 # N = 5,000 and 20,000 (about 5 minutes on 2 cores)
    python bench/data_scale.py --quick         # N = 500 and 2,000
    python bench/data_scale.py --workdir /nvme/tmp --keep

It writes a Fashion200k-layout dataset of photo-like JPEGs itself (300-700 px sides, aspect ratios
1:1 to 1:1.8, quality 90, about 60 KB each). Encoding a JPEG costs 10x decoding it, so the files
cycle through POOL distinct encoded images: decoding each file costs what a distinct one would.
The N = 5,000 dataset is the first 5,000 images of the N = 20,000 one (shared folder of images,
its own label files). Each measurement runs in a fresh process (`--phase`), as a trial would:
  build    open_dataset + open_image_map of both splits on an empty cache
  ready    the same on the warm cache (imports timed apart): the dataset read back from the node's
           entry (study/data/dataset_cache.py), the maps found by their cached keys; run twice
  train    small_cnn + tirg, batch 32, 1 intra-op thread (the default budget's worker), STEPS steps
           on batches gathered from the map at random over the train split, while this process
           samples the worker's USS (/proc/PID/smaps) every 0.25 s; then GATHER_BATCHES batches of
           (reference, target) 2 x 32 gathered alone
  pass     one pass over every train image with gather(), then with an np.memmap of the same file:
           the USS each leaves behind (why gather reads with preadv, study/data/image_cache.py)
  decoders the first DECODER_IMAGES images decoded by 1 thread, by one thread per core, and by a
           spawned process per core (start-up included): why the build uses threads
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POOL = 96  # distinct encoded photos the files cycle through
TEST_EVERY = 7  # image i is a test image when i % 7 == 0 (about 14%, as Fashion200k's 15%)
IMAGE_SIZE = 224
BATCH = 32
STEPS = 3  # training steps measured per N (after WARMUP): seconds each at 224 px on one thread
WARMUP = 1
GATHER_BATCHES = 200
DECODER_IMAGES = 384
FASHION200K_IMAGES = 202_000  # the real dataset, for the extrapolation of a later trial's data-ready time
SAMPLE_SECONDS = 0.25  # a backward pass at 224 px lasts seconds; each sample costs ~50 ms of this process


# ---------------------------------------------------------------- the dataset


def photo(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A JPEG that decodes like a photo: smooth colour fields, a few sharp-edged blobs, sensor noise."""
    from PIL import Image, ImageDraw, ImageFilter

    base = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    pixels = np.asarray(base.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.int16)
    pixels = np.clip(pixels + rng.normal(0, 5, (height, width, 1)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_images(folder: Path, n: int) -> tuple[float, float]:
    """Images 0..n-1 under folder/women/...; returns (seconds, mean bytes per file)."""
    from study.data.fashion import all_captions, image_path

    start = time.monotonic()
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(POOL):
        short, ratio = int(rng.integers(300, 501)), float(rng.uniform(1.0, 1.8))
        long = min(700, int(short * ratio))
        pool.append(photo(rng, *((short, long) if rng.random() < 0.6 else (long, short))))
    captions = all_captions()
    total = 0
    for i in range(n):
        path = folder / image_path(captions[i % len(captions)], 10_000_000 + i)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = pool[i % POOL]
        path.write_bytes(data)
        total += len(data)
    return time.monotonic() - start, total / n


def write_layout(root: Path, images: Path, n: int) -> None:
    """Fashion200k's label files and test queries for images 0..n-1 (images/women linked in)."""
    from study.data.fashion import all_captions, caption_text, image_path

    captions = all_captions()
    root.mkdir(parents=True)
    (root / "women").symlink_to(images / "women", target_is_directory=True)
    (root / "labels").mkdir()
    rows: dict[str, list[str]] = {}
    test_of_caption: dict[int, list[int]] = {}
    for i in range(n):
        c = i % len(captions)
        split = "test" if i % TEST_EVERY == 0 else "train"
        if split == "test":
            test_of_caption.setdefault(c, []).append(i)
        rows.setdefault(f"{captions[c][3]}_{split}_detect_all.txt", []).append(
            f"{image_path(captions[c], 10_000_000 + i)}\t0.9\t{caption_text(captions[c])}\n")
    for name, lines in rows.items():
        (root / "labels" / name).write_text("".join(lines))
    queries = []
    for c, sources in sorted(test_of_caption.items()):
        colour = captions[c][0]  # the sibling caption: the next colour, same pattern, length, category
        others = sorted({x[0] for x in captions} - {colour})
        sibling = next((k for k, x in enumerate(captions) if x[1:] == captions[c][1:] and x[0] == others[0]), None)
        for s in sources:
            if sibling in test_of_caption:
                t = test_of_caption[sibling][0]
                queries.append(f"{image_path(captions[c], 10_000_000 + s)} {image_path(captions[sibling], 10_000_000 + t)}\n")
    (root / "test_queries.txt").write_text("".join(queries))


# ---------------------------------------------------------------- phases (each in a fresh process)


def private_bytes(pid: int | str = "self") -> tuple[int, int]:
    """(USS, USS outside shared libraries) of a process: Private_Clean + Private_Dirty over its
    mappings, as psutil's USS. A page of libtorch that only this process touched is private, so USS
    also moves with how many other torch processes the machine runs; the second figure leaves the
    .so mappings out (anonymous memory and data files, e.g. an mmap'ed image map, stay in)."""
    total = libraries = 0
    library = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if not first.endswith(":"):  # a mapping's header: address perms offset dev inode [path]
                parts = line.split()
                library = len(parts) > 5 and ".so" in parts[5]
            elif first in ("Private_Clean:", "Private_Dirty:", "Private_Hugetlb:"):
                kb = int(line.split()[1]) * 1024
                total += kb
                libraries += kb if library else 0
    return total, total - libraries


def open_both(root: Path, cache: Path, progress: bool = False):
    from study.data import open_dataset, open_image_map

    data = open_dataset("fashion200k", root=root, image_size=IMAGE_SIZE, cache_dir=cache)
    return data, {s.name: open_image_map(s, cache_dir=cache, progress=progress) for s in (data.train, data.test)}


def phase_build(root: Path, cache: Path) -> dict:
    start = time.perf_counter()
    data, maps = open_both(root, cache, progress=True)
    seconds = time.perf_counter() - start
    n = sum(len(m) for m in maps.values())
    disk = sum(os.stat(m.path).st_blocks * 512 for m in maps.values())
    return {"seconds": seconds, "images": n, "threads": maps["train"].header.threads,
            "decode_seconds": sum(m.header.build_seconds for m in maps.values()), "disk_bytes": disk,
            "train_queries": len(data.train.queries), "test_queries": len(data.test.queries)}


def phase_ready(root: Path, cache: Path, imported: float) -> dict:
    import study.data.fashion200k as loader
    from study.data import open_dataset, open_image_map

    read = []  # label files parsed: none when the dataset comes from the node's entry
    real = loader.read_labels
    loader.read_labels = lambda *args, **kwargs: read.append(1) or real(*args, **kwargs)
    start = time.perf_counter()
    data = open_dataset("fashion200k", root=root, image_size=IMAGE_SIZE, cache_dir=cache)
    opened = time.perf_counter()
    maps = [open_image_map(s, cache_dir=cache) for s in (data.train, data.test)]
    end = time.perf_counter()
    return {"seconds": end - start, "dataset_seconds": opened - start, "maps_seconds": end - opened,
            "warm": not read, "imports": imported, "images": sum(len(m) for m in maps)}


def phase_train(root: Path, cache: Path) -> dict:
    import torch

    from models.batch import Batch
    from models.encoders import normalize_images
    from models.model import CirModel, ModelConfig
    from models.objective import Objective, ObjectiveConfig
    from models.text import Vocabulary
    from study.budget import Budget

    budget = Budget(epochs=1)
    torch.set_num_threads(budget.threads_per_worker)
    torch.manual_seed(0)
    data, maps = open_both(root, cache)
    images, queries = maps["train"], data.train.queries
    vocab = Vocabulary.build([q.text for q in queries])
    model = CirModel(ModelConfig(composer="tirg", image_encoder="small_cnn", embed_dim=budget.embed_dim, vocab_size=len(vocab)))
    objective = Objective(ObjectiveConfig(k=8), embed_dim=budget.embed_dim, mid_channels=model.image_encoder.mid_channels)
    parameters = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(parameters, lr=budget.lr, momentum=0.9)
    rng = np.random.default_rng(0)
    reference, target = (torch.empty((BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8) for _ in range(2))

    def step_batch() -> Batch:
        chosen = [queries[i] for i in rng.integers(0, len(queries), BATCH)]
        images.gather(torch.tensor([q.source for q in chosen]), out=reference)
        images.gather(torch.tensor([q.target for q in chosen]), out=target)
        tokens, lengths = vocab.encode([q.text for q in chosen])
        return Batch(reference=normalize_images(reference), tokens=tokens, lengths=lengths, target=normalize_images(target))

    def step() -> None:
        result = objective(model, step_batch())
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()

    ready_uss = private_bytes()  # data, maps, model and optimiser in place, before the first step
    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    step_seconds = (time.perf_counter() - start) / STEPS
    # the gathering alone: one step's (reference, target) 2 x 32 at random over the split
    pinned = torch.cuda.is_available()
    buffers = [torch.empty((BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, pin_memory=pinned) for _ in range(2)]
    picks = torch.from_numpy(rng.integers(0, len(images), (GATHER_BATCHES, 2, BATCH)))
    start = time.perf_counter()
    for b in range(GATHER_BATCHES):
        images.gather(picks[b, 0], out=buffers[0])
        images.gather(picks[b, 1], out=buffers[1])
    gather_seconds = (time.perf_counter() - start) / GATHER_BATCHES
    return {"ready_uss": ready_uss, "step_seconds": step_seconds, "gather_seconds": gather_seconds, "pinned": pinned,
            "map_bytes": os.path.getsize(images.path)}


def phase_pass(root: Path, cache: Path) -> dict:
    import torch

    from study.data.image_cache import HEADER_BYTES

    _, maps = open_both(root, cache)
    images = maps["train"]
    before = private_bytes()[0]
    for i in range(0, len(images), 256):
        images.gather(torch.arange(i, min(i + 256, len(images))))
    after_pread = private_bytes()[0]
    mapped = np.memmap(images.path, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=images.shape)
    for i in range(0, len(images), 256):
        torch.from_numpy(np.array(mapped[i : i + 256]))  # the same copies, read through the mapping
    after_mmap = private_bytes()[0]
    return {"pread_growth": after_pread - before, "mmap_growth": after_mmap - after_pread,
            "map_bytes": os.path.getsize(images.path)}


def _decode_chunk(paths: list[str]) -> int:
    import torch

    from study.data.images import load_image

    torch.set_num_threads(1)
    for p in paths:
        load_image(Path(p), IMAGE_SIZE)
    return len(paths)


def phase_decoders(root: Path, cache: Path) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    import torch

    from study.data import open_dataset

    torch.set_num_threads(1)
    split = open_dataset("fashion200k", root=root, image_size=IMAGE_SIZE, cache_dir=cache).train
    paths = [str(root / p) for p in split.image_paths[:DECODER_IMAGES]]
    chunks = [paths[i : i + 32] for i in range(0, len(paths), 32)]
    cores = len(os.sched_getaffinity(0))
    _decode_chunk(paths[:8])  # imports and first-call costs out of the way
    rates = {}
    start = time.perf_counter()
    _decode_chunk(paths)
    rates["1 thread"] = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(_decode_chunk, chunks))
    rates[f"{cores} threads"] = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_decode_chunk, chunks))
    rates[f"{cores} spawned processes"] = len(paths) / (time.perf_counter() - start)
    return {"rates": rates, "images": len(paths)}


# ---------------------------------------------------------------- orchestration


def run_phase(phase: str, root: Path, cache: Path) -> dict:
    """Run `phase` in a fresh process; for "train" this process samples the child's private memory
    every SAMPLE_SECONDS (from outside, so the sampling takes no GIL from the step it measures)."""
    child = subprocess.Popen([sys.executable, __file__, "--phase", phase, "--root", str(root), "--cache", str(cache)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = (0, 0)
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.append(child.stderr.read()), daemon=True)  # a full pipe would block it
    drain.start()
    while phase == "train" and child.poll() is None:
        try:
            peak = tuple(max(a, b) for a, b in zip(peak, private_bytes(child.pid)))
        except (OSError, ValueError):
            pass  # exiting
        time.sleep(SAMPLE_SECONDS)
    out = child.stdout.read()
    child.wait()
    drain.join()
    if child.returncode != 0:
        raise SystemExit(f"phase {phase} on {root} failed:\n{''.join(err)[-4000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_uss": peak[0], "peak_uss_data": peak[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 500 and 2,000: a trial run of the bench")
    parser.add_argument("--workdir", type=Path, default=None, help="where the datasets and the cache go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="leave the datasets and the cache in --workdir")
    parser.add_argument("--phase", choices=["build", "ready", "train", "pass", "decoders"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    began = time.perf_counter()
    args = parser.parse_args()
    if args.phase:
        if args.phase == "ready":  # imports timed apart from the data
            import study.data  # noqa: F401
            import study.data.image_cache  # noqa: F401
        imported = time.perf_counter() - began
        result = {"build": lambda: phase_build(args.root, args.cache), "ready": lambda: phase_ready(args.root, args.cache, imported),
                  "train": lambda: phase_train(args.root, args.cache), "pass": lambda: phase_pass(args.root, args.cache),
                  "decoders": lambda: phase_decoders(args.root, args.cache)}[args.phase]()
        print(json.dumps(result))
        return
    sizes = (500, 2_000) if args.quick else (5_000, 20_000)
    work = Path(tempfile.mkdtemp(prefix="data_scale-", dir=args.workdir))
    try:
        report(work, sizes, began)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(work: Path, sizes: tuple[int, int], began: float) -> None:
    import torch

    from study.data.dataset_cache import RACY_SECONDS

    cores = len(os.sched_getaffinity(0))
    print(f"bench/data_scale.py: Fashion200k layout at {IMAGE_SIZE} px, {cores} CPUs, torch {torch.__version__}, "
          f"work folder {work}")
    seconds, mean_bytes = write_images(work / "images", max(sizes))
    print(f"wrote {max(sizes):,} JPEGs ({POOL} distinct photo-like images, 300-700 px, {mean_bytes / 1024:.0f} KB "
          f"on average) in {seconds:.1f} s")
    results: dict[int, dict] = {}
    for n in sizes:
        root, cache = work / f"f200k-{n}", work / f"cache-{n}"
        write_layout(root, work / "images", n)
        time.sleep(RACY_SECONDS + 0.5)  # as a real copy is: older than the open (newer data is read, not cached)
        results[n] = {phase: run_phase(phase, root, cache) for phase in ("build", "ready", "train", "pass")}
        results[n]["ready_again"] = run_phase("ready", root, cache)
    decoders = run_phase("decoders", work / f"f200k-{sizes[0]}", work / f"cache-{sizes[0]}")
    small, large = sizes
    a, b = results[small], results[large]

    def row(name: str, va: float, vb: float, fmt: str, target: str = "", ratio: bool = True) -> None:
        grow = f"{vb / va:8.2f}" if ratio and va else " " * 8
        print(f"{name:44s} {format(va, fmt):>12s} {format(vb, fmt):>12s} {grow}   {target}")

    print(f"\n{'':44s} {'N=' + format(small, ','):>12s} {'N=' + format(large, ','):>12s} {'ratio':>8s}   target")
    row("images in the maps (train + test)", a["build"]["images"], b["build"]["images"], ",d")
    row("first build: seconds", a["build"]["seconds"], b["build"]["seconds"], ".1f", "grows with N (decodes each image once)")
    rate = [r["build"]["images"] / r["build"]["decode_seconds"] for r in (a, b)]
    row("first build: images/s (decoding)", *rate, ".0f")
    row(f"first build: images/s per core ({a['build']['threads']} threads)", rate[0] / cores, rate[1] / cores, ".0f")
    warm = "" if all(r[k]["warm"] for r in (a, b) for k in ("ready", "ready_again")) else " (NOT WARM: the layout was read)"
    row("later trial, data ready: seconds" + warm, a["ready"]["seconds"], b["ready"]["seconds"], ".3f", "<= 5 s for all of Fashion200k (x 202k below)")
    row("  the same, run again after training", a["ready_again"]["seconds"], b["ready_again"]["seconds"], ".3f")
    row("  of which open_dataset (the node's entry)", a["ready"]["dataset_seconds"], b["ready"]["dataset_seconds"], ".3f")
    row("  of which open_image_map of both splits", a["ready"]["maps_seconds"], b["ready"]["maps_seconds"], ".3f")
    per = [1e6 * min(r["ready"]["seconds"], r["ready_again"]["seconds"]) / r["ready"]["images"] for r in (a, b)]
    row("  per image (the faster run): us", *per, ".1f", f"x {FASHION200K_IMAGES:,} = {per[1] * FASHION200K_IMAGES / 1e6:.1f} s "
        "for all of Fashion200k")
    row("  (imports before it: seconds)", a["ready"]["imports"], b["ready"]["imports"], ".1f")
    per_image = [r["build"]["disk_bytes"] / r["build"]["images"] for r in (a, b)]
    row("cache on disk: bytes per image", *per_image, ",.0f", f"3 x {IMAGE_SIZE} x {IMAGE_SIZE} = {3 * IMAGE_SIZE ** 2:,}")
    row("cache on disk: MB", a["build"]["disk_bytes"] / 2**20, b["build"]["disk_bytes"] / 2**20, ",.0f", "linear in N")
    row("worker peak USS while training: MB", a["train"]["peak_uss"] / 2**20, b["train"]["peak_uss"] / 2**20, ",.0f",
        "ratio < 1.10")
    row("  without shared-library pages: MB", a["train"]["peak_uss_data"] / 2**20, b["train"]["peak_uss_data"] / 2**20,
        ",.0f", "ratio < 1.10")
    row("  before the first step (data, maps, model): MB", a["train"]["ready_uss"][1] / 2**20,
        b["train"]["ready_uss"][1] / 2**20, ",.0f")
    buffer = "pinned" if a["train"]["pinned"] else "plain"
    gather_rate = [1 / r["train"]["gather_seconds"] for r in (a, b)]
    step_rate = [1 / r["train"]["step_seconds"] for r in (a, b)]
    row(f"gather 2 x {BATCH} into a {buffer} buffer: batches/s", *gather_rate, ",.0f")
    row(f"training step (small_cnn + tirg, {BATCH}, 1 thread): steps/s", *step_rate, ".2f")
    row("gathering rate / consumption rate", gather_rate[0] / step_rate[0], gather_rate[1] / step_rate[1], ",.0f", ">= 5")
    row("one pass over the train map, USS growth MB: gather", a["pass"]["pread_growth"] / 2**20,
        b["pass"]["pread_growth"] / 2**20, ",.1f", "", ratio=False)
    row("  the same pass through np.memmap", a["pass"]["mmap_growth"] / 2**20, b["pass"]["mmap_growth"] / 2**20, ",.0f",
        f"(train map: {a['pass']['map_bytes'] / 2**20:,.0f} / {b['pass']['map_bytes'] / 2**20:,.0f} MB)")
    rates = decoders["rates"]
    base = rates["1 thread"]
    print(f"\ndecoding {decoders['images']} images at {IMAGE_SIZE} px: "
          + ", ".join(f"{name} {r:.0f}/s (x{r / base:.2f})" for name, r in rates.items())
          + " (processes: start-up included)")
    print(f"bench wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
