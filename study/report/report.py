"""A study's report: `python -m study.report studies/<name>` writes `studies/<name>/report.html`, one
self-contained file (figures embedded as PNG data URIs, inline CSS, no script, nothing fetched) that
opens offline.

Sections, in order (`SECTIONS`): the question the study asks and its search space; the budget and
datasets it ran with; the ranking with intervals; the gains against matched baselines (a forest
plot); hyperparameter importance per composer; train vs test recall and the generalisation gap;
learning curves of the top configurations; test recall at every K per dataset; the breakdowns (per
modification type, adjective-only / noun-only); the cost of each configuration; the probe pictures
(retrieval grids, attention maps) of the best configuration beside its matched baseline; and its
composed features decoded into images (`<study>/reconstruction/`, study/reconstruct.py).

Numbers come from the tables `study.results` wrote (intervals, p-values, importance) and seed means
of the per-seed recalls (`trials.parquet` with the parts of trials that ended since it was rebuilt);
nothing is re-estimated here. Figures: `study.report.plots`;
HTML: `template.html` (jinja2) from the dataclasses of `study.report.blocks`.

Example:
    python -m study.report studies/ga_vs_dim                  # -> studies/ga_vs_dim/report.html
    python -m study.report studies/ga_vs_dim --out /tmp/r.html
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from study.report import sections
from study.report.blocks import Report
from study.report.context import SECTIONS, Context
from study.report.inputs import ReportError, read_study_tables

__all__ = ["REPORT_FILE", "SECTIONS", "ReportError", "build_report", "main", "render_report", "write_report"]

REPORT_FILE = "report.html"
TEMPLATE = "template.html"


def build_report(study_dir: str | Path) -> Report:
    """Read `study_dir` and assemble every section (figures rendered to data URIs)."""
    tables = read_study_tables(study_dir)
    context = Context.of(tables)
    name = (tables.record or {}).get("space") or (tables.space.name if tables.space else tables.directory.name)
    return Report(title=f"Study {name}", summary=sections.summary(context),
                  sections=tuple(build(context) for build in sections.BUILDERS))


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render_report(report: Report) -> str:
    return _environment().get_template(TEMPLATE).render(report=report)


def write_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of `study_dir` into `out` (default `<study_dir>/report.html`), atomically:
    a reader never sees half a file."""
    if out is not None and not Path(out).parent.is_dir():  # before the seconds of rendering
        raise ReportError(f"{Path(out).parent}: no such directory for --out; create it or give another path")
    html = render_report(build_report(study_dir))  # a study folder that is not one fails here
    out = Path(out) if out is not None else Path(study_dir) / REPORT_FILE
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(html)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.report",
        description="Write a study's report: one self-contained HTML file (figures embedded) with the "
                    "question, budget, ranking, gains, importance, generalisation, learning curves, recall "
                    "at every K, breakdowns, cost and probe pictures.")
    parser.add_argument("study_dir", type=Path, help="e.g. studies/ga_vs_dim")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write it (default: <study_dir>/{REPORT_FILE})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        path = write_report(args.study_dir, args.out)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the report could not be written (permissions, full disk)
        where = args.out or args.study_dir / REPORT_FILE  # not error.filename: that is the temporary file
        print(f"error: {where}: cannot write the report ({error.strerror or error}); give a writable --out",
              file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s")
    return 0
