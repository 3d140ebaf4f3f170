"""Command line of the data package.

    python -m study.data generate css --out /tmp/css --seed 0 --scale 0.05
    python -m study.data generate fashion --out /tmp/fashion --scale 0.05
    python -m study.data describe /tmp/css [--grid /tmp/grid.png]
    python -m study.data describe /data/fashioniq --option category=shirt
    python -m study.data cache list [--cache-dir DIR]            # image maps and opened datasets: what, size, last use
    python -m study.data cache clear [--older-than DAYS] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from study.data import GENERATORS, DatasetError, known_datasets
from study.data.cache import generate_into, generator
from study.data.checks import parse_options
from study.data.cache_admin import clear_datasets, clear_maps, describe_datasets, describe_maps, list_datasets, list_maps
from study.data.dataset_cache import SUFFIX as ENTRY_SUFFIX
from study.data.dataset_cache import dataset_cache_dir
from study.data.describe import describe, no_images
from study.data.image_cache import SUFFIX, image_cache_dir


def _generate(args: argparse.Namespace) -> None:
    gen = generator(args.name)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: is a file, not a folder; choose a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: folder is not empty; choose a new --out so no files are mixed")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file on the way, a read-only parent
        raise DatasetError(f"--out {out}: cannot create the folder ({error.strerror}); choose a new or empty "
                           "folder you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DatasetError(f"--out {out}: cannot write in it (read-only or not yours); choose a folder you can write")
    seconds = generate_into(gen.name, out, seed=args.seed, scale=args.scale)
    print(f"wrote {gen.name} (seed {args.seed}, scale {args.scale}) to {out} in {seconds:.1f} s; "
          f"read it with open_dataset({gen.loader!r}, root=...)")


def _cache(args: argparse.Namespace) -> None:
    folder, datasets = image_cache_dir(args.cache_dir), dataset_cache_dir(args.cache_dir)
    if args.action == "list":
        print("\n".join(describe_maps(list_maps(args.cache_dir), folder)))
        print("\n".join(describe_datasets(list_datasets(args.cache_dir), datasets)))
        return
    deleted, skipped = clear_maps(args.cache_dir, older_than_days=args.older_than)
    which = f" unused for more than {args.older_than:g} days" if args.older_than is not None else ""
    print(f"deleted {sum(p.suffix == SUFFIX for p in deleted)} image maps{which} ({len(deleted)} files) from {folder}")
    gone, kept = clear_datasets(args.cache_dir, older_than_days=args.older_than)
    print(f"deleted {sum(p.suffix == ENTRY_SUFFIX for p in gone)} opened datasets{which} ({len(gone)} files) from {datasets}")
    for path in skipped + kept:
        print(f"kept {path.name}: a process is building or opening it", file=sys.stderr)


def _describe(args: argparse.Namespace) -> None:
    data = describe(args.root, args.grid, options=parse_options(args.option))
    empty = no_images(data, args.root)
    if empty:  # the counts above say what the layout lists; nothing to study or draw
        raise DatasetError(empty)


COMMANDS = {"generate": _generate, "cache": _cache, "describe": _describe}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.data", description=f"Datasets: {known_datasets()}")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a synthetic dataset in its real file layout")
    gen.add_argument("name", choices=GENERATORS.names())
    gen.add_argument("--out", required=True, type=Path, help="new or empty folder")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--scale", type=float, default=1.0, help="fraction of full size, in (0, 1]")
    desc = commands.add_parser("describe", help="print counts per split and write a sample grid PNG")
    desc.add_argument("root", type=Path)
    desc.add_argument("--grid", type=Path, default=None, help="PNG path (default ROOT/sample_grid.png)")
    desc.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="loader option, e.g. category=shirt for fashioniq (repeatable)")
    cache = commands.add_parser("cache", help="the node's decoded image maps and opened datasets: list them, or clear them")
    cache.add_argument("action", choices=["list", "clear"])
    cache.add_argument("--cache-dir", type=Path, default=None,
                       help="the study's cache folder (maps are in its images/, opened datasets in datasets/); "
                            "default $CIRSTUDY_CACHE or ~/.cache/cirstudy/data")
    cache.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                       help="clear only items no process opened for this many days")
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except DatasetError as err:  # bad input: what was wrong and how to fix it, exit code 2 as argparse's
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
