"""What every loader checks at the edge: options, annotation files, and the images they list.

A loader reads its layout into `SplitParts` and hands them to `assemble`, which looks for every
listed image on disk, builds the `ImageManifest` (counts, examples, a hash of the listed paths),
and then either refuses (one DatasetError naming the first missing file, the counts and the
`--allow-missing-images` switch) or, when allowed, drops the missing images and every query that
touches one; when that leaves no image, or a split without images or queries,
`RetrievalData.unusable` says why and open_dataset refuses it. Splits are delivered at
`native_image_size(root)`: 224 px for a real layout, the generator's own size for a folder a
generator wrote (it holds `generated.json`); open_dataset's `image_size` overrides both. Reading
helpers turn a missing file, truncated JSON or a malformed line into one DatasetError naming the
file and line (STYLE.md section 4), and note each file they read, as `assemble` notes the listed
images (study/data/reads.py): the node's dataset cache watches them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from study.data.errors import DatasetError
from study.data.images import MIN_IMAGE_SIZE, REAL_IMAGE_SIZE
from study.data.reads import note_images, read_text
from study.data.types import ImageManifest, Query, RetrievalData, Split

MISSING_EXAMPLES = 5
GENERATED_MANIFEST = "generated.json"  # as study/data/cache.py's MANIFEST (that module imports the loaders)
GENERATED_IMAGE_SIZE = 64  # generators' native side, for manifests written before they recorded it


def native_image_size(root: Path) -> int:
    """The side a folder's images are delivered at by default: the generator's (its manifest says)
    for generated data, else the papers' 224 px. Never the size of some image in the folder."""
    manifest = Path(root) / GENERATED_MANIFEST
    if not manifest.is_file():
        return REAL_IMAGE_SIZE
    recorded = read_json(manifest, f"delete {manifest} if {root} is not generated data, else regenerate it")
    size = recorded.get("image_size", GENERATED_IMAGE_SIZE) if isinstance(recorded, dict) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        raise DatasetError(f"{manifest}: `image_size` must be an integer >= {MIN_IMAGE_SIZE}, got {size!r}; regenerate the folder")
    return size


def check_image_size(image_size: object, where: str) -> int:
    """`image_size` as given to open_dataset, checked: an integer >= MIN_IMAGE_SIZE."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DatasetError(f"{where}: image_size must be an integer >= {MIN_IMAGE_SIZE} (pixels per side), "
                           f"got {image_size!r}; use e.g. {REAL_IMAGE_SIZE}, or None for the dataset's default")
    return image_size


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """Command-line `--option NAME=VALUE` pairs -> {NAME: VALUE}; a malformed pair raises DatasetError."""
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise DatasetError(f"--option {pair!r}: expected NAME=VALUE, e.g. category=dress")
        options[name] = value
    return options


def check_options(dataset: str, options: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """`options` with every key of `choices` present and valid; an unknown, missing or bad option
    raises DatasetError naming the valid ones."""
    unknown = sorted(set(options) - set(choices))
    if unknown:
        valid = ", ".join(f"{k} ({' | '.join(map(str, v))})" for k, v in choices.items()) or "none"
        raise DatasetError(f"dataset {dataset}: unknown option(s) {unknown}; valid options: {valid}")
    for key, valid_values in choices.items():
        if key not in options:
            raise DatasetError(f"dataset {dataset}: option {key!r} is required; pass options={{{key!r}: one of {list(valid_values)}}}")
        if options[key] not in valid_values:
            raise DatasetError(f"dataset {dataset}: option {key}={options[key]!r} is not valid; choose one of {list(valid_values)}")
    return dict(options)


def read_json(path: Path, fix: str) -> Any:
    """The parsed JSON file; a missing, truncated or undecodable file raises naming it (and the line)."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the file ({err}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); the file is truncated or corrupt: {fix}") from None


def read_lines(path: Path, fix: str) -> list[str]:
    """The lines of a text file without their line ends (line n is element n - 1)."""
    try:
        return read_text(path).splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the file ({err}); {fix}") from None


def expect_list(value: Any, path: Path, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DatasetError(f"{path}: expected a JSON list of {what}, got {type(value).__name__}")
    return value


@dataclass
class SplitParts:
    """One split as a loader read it, before the images are checked on disk."""

    name: str  # "train" | "test"
    image_paths: list[str]  # relative to the root
    labels: list[str]
    queries: list[Query]
    present: set[str] | None = field(default=None, repr=False)  # paths known to exist; None: stat each
    # What the annotation files list, parallel to image_paths, when that is not the path itself
    # (FashionIQ lists ids -> "images/<id>", Shoes names found anywhere under images/): the
    # manifest hashes and reports these, so its hash does not depend on which files are present.
    listed: list[str] | None = None
    listed_in: tuple[str, ...] = ()  # the annotation files listing the split's images, relative to the root


def manifest_of(listed: Iterable[str], missing: Iterable[str], dropped_queries: int = 0) -> ImageManifest:
    names = sorted(set(listed))
    absent = sorted(set(missing))
    digest = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
    return ImageManifest(len(names), len(absent), tuple(absent[:MISSING_EXAMPLES]), digest, dropped_queries)


def _touching(part: SplitParts, missing: set[str]) -> int:
    """How many of the split's queries have a missing source or target."""
    bad = {i for i, p in enumerate(part.image_paths) if p in missing}
    return sum(q.source in bad or q.target in bad for q in part.queries)


def _drop_missing(root: Path, part: SplitParts, missing: set[str], image_size: int) -> tuple[Split, int]:
    if not missing:  # the common case, kept cheap: a later trial re-opens the dataset before it trains
        split = Split(part.name, root, tuple(part.image_paths), tuple(part.labels), tuple(part.queries), image_size)
        return split, 0
    keep = [i for i, p in enumerate(part.image_paths) if p not in missing]
    new_index = {old: new for new, old in enumerate(keep)}
    queries = tuple(
        Query(new_index[q.source], q.text, new_index[q.target], q.kind, q.region)
        for q in part.queries
        if q.source in new_index and q.target in new_index
    )
    paths = tuple(part.image_paths[i] for i in keep)
    split = Split(part.name, root, paths, tuple(part.labels[i] for i in keep), queries, image_size)
    return split, len(part.queries) - len(queries)


def _unusable(dataset: str, root: Path, parts: Sequence[SplitParts], splits: Sequence[Split], missing: set[str],
              fix: str) -> str:
    """Why what dropping the missing images left cannot be studied (no image at all, or a split
    without images or queries: a study would train or rank on nothing), or ""."""
    if not missing:
        return ""
    named = {part.name: ", ".join(str(root / f) for f in part.listed_in) or f"{dataset}'s annotation files"
             for part in parts}
    files = ", ".join(dict.fromkeys(named.values()))
    listed = {p for part in parts for p in part.image_paths}
    if missing >= listed:
        folder = os.path.commonpath([os.path.dirname(p) for p in missing])
        return (f"{dataset}: none of the {len(listed)} images listed in {files} were found under "
                f"{root / folder if folder else root}; --allow-missing-images drops missing images, which leaves "
                f"nothing here: {fix}")
    for part, split in zip(parts, splits):
        absent = len(set(part.image_paths) & missing)
        if part.image_paths and not split.image_paths:
            what = "images"
        elif part.queries and not split.queries:
            what = "queries"
        else:
            continue
        return (f"{dataset}: split {part.name} has 0 {what} left after dropping missing images ({absent} of its "
                f"{len(set(part.image_paths))} images listed in {named[part.name]} are missing, "
                f"and every one of its {len(part.queries)} queries touches one); restore them: {fix}")
    return ""


def assemble(
    dataset: str,
    root: Path,
    train: SplitParts,
    test: SplitParts,
    *,
    recall_ks: tuple[int, ...],
    notes: Sequence[str] = (),
    allow_missing_images: bool,
    fix: str,
    label_parts: tuple[str, ...] = (),
) -> RetrievalData:
    """The RetrievalData of two splits, with its ImageManifest; refuses missing images unless
    allowed, in which case they and the queries that touch them are dropped (and `unusable` says so
    when that leaves no image, or a split without images or queries: open_dataset refuses it).

    `fix` says how to restore the images ("unpack the images/ folder into ROOT").
    """
    for part in (train, test):
        if len(part.image_paths) != len(part.labels):
            raise ValueError(f"{dataset} {part.name}: {len(part.image_paths)} paths but {len(part.labels)} labels")  # a loader bug
    listed, missing, missing_listed = set(), set(), set()
    folder = os.fspath(root)
    for part in (train, test):
        note_images(part.image_paths)  # their folders tell a cached copy when an image comes or goes
        for p, key in zip(part.image_paths, part.listed or part.image_paths):
            listed.add(key)
            # os.path on strings: a third of pathlib's cost, once per image of every trial
            if p in missing or not (p in part.present if part.present is not None else os.path.isfile(os.path.join(folder, p))):
                missing.add(p)
                missing_listed.add(key)
    if missing and not allow_missing_images:
        first = min(missing)
        dropped = _touching(train, missing) + _touching(test, missing)
        examples = ", ".join(sorted(missing_listed)[:MISSING_EXAMPLES])
        raise DatasetError(
            f"{root / first}: image file is missing; {len(missing)} of {len(listed)} images listed by {dataset} "
            f"are missing (e.g. {examples}). Restore them ({fix}), or pass --allow-missing-images "
            f"(open_dataset(..., allow_missing_images=True)) to drop them and the {dropped} queries that touch them"
        )
    size = native_image_size(root)
    train_split, dropped_train = _drop_missing(root, train, missing, size)
    test_split, dropped_test = _drop_missing(root, test, missing, size)
    manifest = manifest_of(listed, missing_listed, dropped_train + dropped_test)
    notes = list(notes)
    if missing:
        notes.append(
            f"{len(missing)} of {len(listed)} listed images missing (allowed): dropped them and "
            f"{manifest.dropped_queries} queries that touch them; e.g. {', '.join(manifest.missing_examples)}"
        )
    unusable = _unusable(dataset, root, (train, test), (train_split, test_split), missing, fix)
    return RetrievalData(dataset, train_split, test_split, recall_ks, tuple(notes), manifest, label_parts, unusable)
