"""Composed features as images: the grid `study.reconstruct` draws for the best configuration, at
`<study>/reconstruction/<dataset key>.png`, with the numbers of the `.json` beside it (the decoder's
held-out loss, the test queries' pixel losses). A study without one gets a sentence saying how to
make it. Read as files only: nothing here imports torch."""
from __future__ import annotations

import json
from pathlib import Path

from study.report.blocks import Picture, Section, Subheading, Text
from study.report.context import SECTIONS, Context
from study.report.probes import _png_uri

__all__ = ["RECONSTRUCTION_DIR", "reconstruction", "reconstruction_pictures"]

RECONSTRUCTION_DIR = "reconstruction"  # study.reconstruct.RECONSTRUCTION_DIR, repeated: that module imports torch


def reconstruction_pictures(study_dir: Path) -> list[Path]:
    """The study's reconstruction grids, one per dataset key, sorted by name."""
    return sorted((study_dir / RECONSTRUCTION_DIR).glob("*.png"))


def _numbers(path: Path) -> str:
    """One sentence from the grid's .json; "" when it is absent or not what study.reconstruct writes."""
    try:
        facts = json.loads(path.read_text())
        fit, loss = facts["decoder"], facts["test_pixel_loss"]
        return (f"Decoder ({fit['parameters']:,} parameters, {fit['steps']} steps on {fit['train_images']} training "
                f"images): held-out pixel loss {fit['held_out_before']:.4f} before training, "
                f"{fit['held_out_after']:.4f} after. Over the {facts['test_queries']} test queries, the pixel loss "
                f"against the true target of the image decoded from the composed feature is "
                f"{loss['composed']:.4f}; from the target's own embedding {loss['target_embedding']:.4f}; from the "
                f"reference's embedding (no change) {loss['reference_embedding']:.4f}; the training images' mean "
                f"image {loss['train_mean_image']:.4f}. Configuration "
                f"{facts.get('config_id', '?')}, model {facts.get('run', '?')} ({facts.get('checkpoint', '?')}).")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def reconstruction(context: Context) -> Section:
    title = SECTIONS["reconstruction"]
    study = context.tables.directory
    pictures = reconstruction_pictures(study)
    blocks: list = [Text("A small decoder, trained to turn the frozen model's image embeddings back into 64 x 64 "
                         "images, applied to composed query features: per test query, the reference, the text, the "
                         "image decoded from the composed feature and the true target (docs/reconstruction.md).")]
    if not pictures:
        blocks.append(Text(f"No reconstruction in this study ({RECONSTRUCTION_DIR}/ is empty or absent): study.run "
                           "draws one at the end of a study with a dataset of CSS layout; for this study run "
                           f"`python -m study.reconstruct --study {study}`.", note=True))
        return Section("reconstruction", title, tuple(blocks))
    for path in pictures:
        key = path.stem
        blocks.append(Subheading(key))
        uri = _png_uri(path)
        blocks.append(Picture(uri, f"composed features of {key} test queries as images") if uri
                      else Text(f"{path.name} is not a PNG.", note=True))
        numbers = _numbers(path.with_suffix(".json"))
        if numbers:
            blocks.append(Text(numbers, note=True))
    return Section("reconstruction", title, tuple(blocks))
