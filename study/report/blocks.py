"""What a report is made of, as the template receives it: sections of blocks (text, facts, tables,
pictures, probe pictures side by side). Every picture is a `data:` URI already, so the rendered
file needs nothing beside it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Union

__all__ = ["Block", "Cell", "Facts", "Picture", "ProbePair", "Report", "Row", "Section", "Subheading", "Table",
           "Text"]


@dataclass(frozen=True)
class Text:
    kind: ClassVar[str] = "text"
    text: str
    note: bool = False  # drawn muted: what is missing and why, how to read a figure


@dataclass(frozen=True)
class Subheading:
    kind: ClassVar[str] = "subheading"
    text: str


@dataclass(frozen=True)
class Facts:
    """Name/value pairs (the budget, a dataset's settings)."""

    kind: ClassVar[str] = "facts"
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | str | None = None  # the unrounded value, as `data-value` (checked by tests)
    key: str = ""  # the table column it came from, as `data-key`
    numeric: bool = False  # right-aligned


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    config: str = ""  # `data-config`
    style: Literal["", "best", "baseline", "total"] = ""  # the best configuration stands out, baselines recede


@dataclass(frozen=True)
class Table:
    kind: ClassVar[str] = "table"
    headers: tuple[str, ...]
    rows: tuple[Row, ...]
    id: str = ""
    caption: str = ""


@dataclass(frozen=True)
class Picture:
    kind: ClassVar[str] = "picture"
    uri: str  # data:image/png;base64,...
    alt: str


@dataclass(frozen=True)
class ProbePair:
    """The same probe picture of two configurations, side by side; uri "" when one has none."""

    kind: ClassVar[str] = "probes"
    title: str
    captions: tuple[str, ...]
    uris: tuple[str, ...]
    missing: tuple[str, ...]  # per column, the sentence shown instead of a picture


Block = Union[Text, Subheading, Facts, Table, Picture, ProbePair]


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Report:
    title: str
    summary: str
    sections: tuple[Section, ...]
