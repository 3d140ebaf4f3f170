"""The one error the data package raises for bad files, layouts and arguments.

A `DatasetError` message says what was wrong, which file (and line, when there is one) and how to
fix it, so a study stops at dataset loading with a sentence a user can act on, never a library
traceback (STYLE.md section 4). It subclasses ValueError so callers that already catch bad values
keep working.
"""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file, layout or argument that cannot be used; the message names the fix."""
