"""A counter line on stderr while a large dataset is generated (silent for small ones)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, min_total: int = 2000) -> None:
        self.label, self.total = label, total
        self.enabled = total >= min_total  # small (test-size) runs stay quiet
        self.done, self._last = 0, 0.0
        self._open = False  # a counter line is on stderr without its line end

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.5 or self.done == self.total):
            self._last = now
            self._open = self.done < self.total
            end = "" if self._open else "\n"
            print(f"\r{self.label}: {self.done}/{self.total}", end=end, file=sys.stderr, flush=True)

    def end(self) -> None:
        """End the counter's line when the work stopped before the total (an error message follows)."""
        if self._open:
            print(file=sys.stderr, flush=True)
            self._open = False
