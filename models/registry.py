"""The one Registry class: names -> builders (after detectron2/fvcore's `Registry`).

Composers, regularisers, image encoders and datasets each own one instance; adding one is a new
file, a decorator and an import line in the package's `__init__.py`, never an if/elif on names.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """Names -> builders. Each instance's docstring (given at construction) says what a builder returns."""

    def __init__(self, kind: str, home: str, doc: str = "") -> None:
        self.kind, self.home, self.__doc__ = kind, home, doc
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(builder: T) -> T:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known: {sorted(self._builders)}; "
                f"add one in {self.home}/{name}.py"
            )
        return self._builders[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders
