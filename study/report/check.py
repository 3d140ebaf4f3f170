"""What a written report must satisfy, checked from the file alone and the study's tables; the unit
tests and the integration test (on a real smoke study) call `check_report`.

* every section of `SECTIONS` has its heading;
* every <img> is a `data:image/png;base64,` URI that decodes as a PNG;
* nothing is referenced outside the file: every src/href is a data: URI or an in-page #anchor, no
  script, stylesheet link, frame or embedded object, no url() or @import in the CSS;
* the ranking table's values are ranking.parquet's;
* the probe pictures of the best configuration and its baseline are embedded when the study has
  them, and a sentence says so when it has none;
* the reconstruction grids (`<study>/reconstruction/*.png`) are embedded when the study has them, and
  a sentence says how to make one when it has none.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from study.report.context import SECTIONS
from study.report.probes import PROBE_KINDS, probe_folder
from study.report.reconstruction import reconstruction_pictures
from study.parquet_io import read_parquet_frame

__all__ = ["check_report"]

DATA_PNG = "data:image/png;base64,"
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background", "cite",
                  "longdesc", "manifest", "ping", "xlink:href", "codebase", "archive", "usemap"}
FORBIDDEN_TAGS = {"script", "link", "iframe", "frame", "object", "embed", "base", "audio", "video", "source",
                  "track", "applet", "portal"}
RANKING_KEYS = ("rank", "whm_mean", "whm_low", "whm_high", "n_seeds", "p_vs_best")
_CSS_REFERENCE = re.compile(r"url\(\s*(?!['\"]?data:)|@import", re.IGNORECASE)


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, str] = {}  # section id -> its h2 text
        self.images: list[str] = []
        self.problems: list[str] = []
        self.ranking: dict[str, dict[str, str | None]] = {}  # config -> data-key -> data-value
        self._section: str | None = None
        self._in_h2 = False
        self._h2 = ""
        self._in_style = False
        self._table: str | None = None
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"<{tag}> at line {self.getpos()[0]}: a report embeds, it never loads")
        for name, value in attrs:
            value = (value or "").strip()
            if name in URL_ATTRIBUTES and not (value.startswith("data:") or (name == "href" and value.startswith("#"))):
                self.problems.append(f"<{tag} {name}={value[:60]!r}> at line {self.getpos()[0]}: "
                                     "refers outside the file")
            if name == "style" and _CSS_REFERENCE.search(value):
                self.problems.append(f"<{tag} style=...> at line {self.getpos()[0]}: CSS that loads a resource")
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}> at line {self.getpos()[0]}: script in an attribute")
        if tag == "section":
            self._section = values.get("id") or ""
        elif tag == "h2":
            self._in_h2, self._h2 = True, ""
        elif tag == "style":
            self._in_style = True
        elif tag == "img":
            self.images.append(values.get("src") or "")
        elif tag == "table":
            self._table = values.get("id")
        elif tag == "tr" and self._table == "ranking-table":
            self._row = values.get("data-config")
            if self._row:
                self.ranking[self._row] = {}
        elif tag == "td" and self._table == "ranking-table" and self._row and values.get("data-key"):
            self.ranking[self._row][values["data-key"]] = values.get("data-value")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._in_h2:
            self._in_h2 = False
            if self._section is not None:
                self.sections[self._section] = self._h2.strip()
        elif tag == "style":
            self._in_style = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self._h2 += data
        if self._in_style and _CSS_REFERENCE.search(data):
            self.problems.append(f"<style> near line {self.getpos()[0]}: CSS that loads a resource (url() or @import)")


def _png_problem(uri: str) -> str | None:
    from PIL import Image

    if not uri.startswith(DATA_PNG):
        return f"an <img> whose src is not a base64 PNG data URI: {uri[:40]!r}"
    try:
        data = base64.b64decode(uri[len(DATA_PNG):], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            if image.format != "PNG":
                return f"an embedded picture decodes as {image.format}, not PNG"
    except (binascii.Error, OSError, SyntaxError, ValueError) as error:
        return f"an embedded picture does not decode as a PNG ({error})"
    return None


def _same(stored, shown: str | None) -> bool:
    missing = stored is None or (not isinstance(stored, str) and pd.isna(stored))
    if missing or shown is None:
        return missing and shown is None
    return math.isclose(float(stored), float(shown), rel_tol=0, abs_tol=1e-12)


def check_report(study_dir: str | Path, html: str | Path | None = None) -> list[str]:
    """Problems with the report of `study_dir` (default file `<study_dir>/report.html`); [] when it
    satisfies everything above."""
    study_dir = Path(study_dir)
    path = Path(html) if html is not None else study_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    parsed = _Parsed()
    parsed.feed(text)
    parsed.close()
    problems = list(parsed.problems)
    for section_id, title in SECTIONS.items():
        if parsed.sections.get(section_id) != title:
            problems.append(f"section {title!r} (#{section_id}) is missing")
    if not parsed.images:
        problems.append("no embedded picture at all")
    problems += [p for p in map(_png_problem, parsed.images) if p]
    ranking = read_parquet_frame(study_dir / "ranking.parquet")
    if list(parsed.ranking) != [str(c) for c in ranking["config_id"]]:
        problems.append(f"the ranking table lists {list(parsed.ranking)}, ranking.parquet {list(ranking['config_id'])}")
    for _, row in ranking.iterrows():
        shown = parsed.ranking.get(str(row["config_id"]), {})
        for key in RANKING_KEYS:
            if key in row and not _same(row[key], shown.get(key)):
                problems.append(f"ranking {row['config_id']} {key}: the report shows {shown.get(key)!r}, "
                                f"ranking.parquet holds {row[key]!r}")
    if len(ranking):
        best = ranking.iloc[0]
        configs = [str(best["config_id"])]
        if best["role"] != "baseline" and not pd.isna(best["baseline_id"]):
            configs.append(str(best["baseline_id"]))
        found = 0
        for config_id in configs:
            folder = probe_folder(study_dir, config_id)
            for picture in sorted(folder.glob("*.png")) if folder else []:
                if any(picture.name.endswith(f"-{kind}.png") for kind in PROBE_KINDS):
                    found += 1
                    if base64.b64encode(picture.read_bytes()).decode("ascii") not in text:
                        problems.append(f"probe picture {picture} is not embedded")
        if not found and "No probe pictures in this study" not in text:
            problems.append("the study has no probe pictures and the report does not say so")
    grids = reconstruction_pictures(study_dir)
    for grid in grids:
        if base64.b64encode(grid.read_bytes()).decode("ascii") not in text:
            problems.append(f"reconstruction picture {grid} is not embedded")
    if not grids and "No reconstruction in this study" not in text:
        problems.append("the study has no reconstruction picture and the report does not say how to make one")
    return problems
