"""The probe pictures of the best configuration beside its matched baseline: the retrieval grid and
the attention maps the trainer writes with each checkpoint, at
`<study>/train/train-<config id>/checkpoint_*/probes/<dataset key>-{retrievals,attention}.png`,
from the newest checkpoint that has them. A study run before checkpoints carried them gets a
sentence saying so."""
from __future__ import annotations

import base64
from pathlib import Path

from study.report.blocks import ProbePair, Section, Subheading, Text
from study.report.context import SECTIONS, Context

__all__ = ["PROBE_KINDS", "probe_folder", "probes"]

PROBE_KINDS = {"retrievals": "retrieval grid", "attention": "attention maps"}
WHY_ABSENT = {"attention": " (a composer without attention draws none)"}  # study/probes.py render_attention
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def probe_folder(study_dir: Path, config_id: str) -> Path | None:
    """The `probes/` folder of the newest checkpoint of a configuration's Train run that has probe
    pictures (`train-<config id>` is study.trainable.train_run_name's, not imported: it pulls Ray)."""
    run = study_dir / "train" / f"train-{config_id}"
    checkpoints = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())  # not checkpoint_manager_snapshot.json
    for checkpoint in reversed(checkpoints):
        folder = checkpoint / "probes"
        if any(any(folder.glob(f"*-{kind}.png")) for kind in PROBE_KINDS):
            return folder
    return None


def _png_uri(path: Path) -> str | None:
    """The file as a data URI, None when it is not a PNG (the report would carry a broken picture)."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def probes(context: Context) -> Section:
    title = SECTIONS["probes"]
    if context.best is None:
        return Section("probes", title, (Text("No configuration has finished.", note=True),))
    columns = [context.best] + ([context.baseline] if context.baseline else [])
    folders = {c: probe_folder(context.tables.directory, c) for c in columns}
    blocks: list = [Text("The same probe queries for the best configuration and its matched baseline, from the "
                         "newest checkpoint of each: what they retrieve and where they attend.")]
    if context.baseline is None:
        why = ("it is itself a baseline" if context.tables.ranking.iloc[0]["role"] == "baseline"
               else "it has no matched baseline that finished")
        blocks.append(Text(f"The best configuration is shown alone: {why}.", note=True))
    if not any(folders.values()):
        blocks.append(Text("No probe pictures in this study: it ran before checkpoints carried them (train/train-<id>/"
                           "checkpoint_*/probes/).", note=True))
        return Section("probes", title, tuple(blocks))
    datasets = sorted({p.name.removesuffix(f"-{kind}.png") for f in folders.values() if f
                       for kind in PROBE_KINDS for p in f.glob(f"*-{kind}.png")},
                      key=lambda d: ((context.tables.datasets + [d]).index(d), d))
    role = {context.best: "best", context.baseline: "baseline"}
    for d in datasets:
        blocks.append(Subheading(d))
        for kind, what in PROBE_KINDS.items():
            uris, missing, captions = [], [], []
            for c in columns:
                folder = folders[c]
                path = folder / f"{d}-{kind}.png" if folder else None
                uri = _png_uri(path) if path is not None and path.is_file() else None
                uris.append(uri or "")
                missing.append("" if uri else (f"{path.name} is not a PNG" if path is not None and path.is_file()
                                               else f"no {what} for {c}{WHY_ABSENT.get(kind, '')}"))
                where = f" ({folder.parent.name})" if folder else ""
                captions.append(f"{role[c]}: {context.label(c)}{where}")
            blocks.append(ProbePair(what, tuple(captions), tuple(uris), tuple(missing)))
    return Section("probes", title, tuple(blocks))
