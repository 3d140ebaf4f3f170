"""CSS modifications (add / remove / make) in TIRG's text grammar, and applying them to scenes.

Grammar of CSS's texts (Vo et al., CVPR 2019, arXiv 1812.07119; methods.md B.7):
    add <size> <color> <shape> to <position>           "add small red rectangle to top-center"
    remove [<position>] [<size>] [<color>] <shape|object>          "remove red object"
    make [<position>] [<size>] [<color>] <shape|object> <size|color>
                                         "make middle-left small gray object large", "make circle small"
The bracketed words of remove/make are a descriptor chosen so that exactly one object of the
source scene matches it; "add" names every attribute so that the target scene is determined.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from study.data.css_render import COLORS, SHAPES
from study.data.css_scene import MAX_OBJECTS, POSITIONS, SIZES, Obj, cell_of, make_object

ATTRS: tuple[str, ...] = ("pos", "size", "color", "shape")  # descriptor word order
KINDS: tuple[str, ...] = ("add", "remove", "make")


@dataclass(frozen=True)
class Mod:
    kind: str  # "add" | "remove" | "make"
    # remove/make: the descriptor, a subset of ATTRS with values; add: all four, the new object
    attrs: tuple[tuple[str, str], ...]
    new_attr: str | None = None  # make: "size" or "color"
    new_value: str | None = None

    @property
    def text(self) -> str:
        a = dict(self.attrs)
        if self.kind == "add":
            return f"add {a['size']} {a['color']} {a['shape']} to {a['pos']}"
        words = [a[k] for k in ATTRS[:3] if k in a] + [a.get("shape", "object")]
        tail = [self.new_value] if self.kind == "make" else []
        return " ".join([self.kind, *words, *tail])


def attributes(obj: Mapping[str, Any]) -> dict[str, str]:
    return {"pos": POSITIONS[cell_of(obj)], "size": obj["size"], "color": obj["color"], "shape": obj["shape"]}


def matching(objects: Sequence[Mapping[str, Any]], attrs: Sequence[tuple[str, str]]) -> list[int]:
    """Indices of the objects that fit a descriptor."""
    return [i for i, o in enumerate(objects) if all(attributes(o)[k] == v for k, v in attrs)]


def _changed_pair(obj: Mapping[str, Any], mod: Mod) -> tuple[str, str]:
    color = mod.new_value if mod.new_attr == "color" else obj["color"]
    return (obj["shape"], str(color))


def can_apply(mod: Mod, objects: Sequence[Mapping[str, Any]], forbidden: Collection[tuple[str, str]]) -> bool:
    """Whether the text is unambiguous in this scene, changes it, and keeps it legal (1-5 objects,
    no forbidden shape-colour pair)."""
    if mod.kind == "add":
        a = dict(mod.attrs)
        taken = {POSITIONS[cell_of(o)] for o in objects}
        return len(objects) < MAX_OBJECTS and a["pos"] not in taken and (a["shape"], a["color"]) not in forbidden
    found = matching(objects, mod.attrs)
    if len(found) != 1:
        return False
    if mod.kind == "remove":
        return len(objects) >= 2
    obj = objects[found[0]]
    return obj[str(mod.new_attr)] != mod.new_value and _changed_pair(obj, mod) not in forbidden


def apply_mod(mod: Mod, objects: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> list[Obj]:
    """The target scene: the source with exactly the change the text asks for. Unchanged objects
    keep their positions; an added object is painted last, as a new object would be."""
    out = [dict(o) for o in objects]
    if mod.kind == "add":
        a = dict(mod.attrs)
        out.append(make_object(POSITIONS.index(a["pos"]), a["shape"], a["color"], a["size"], rng))
        return out
    (index,) = matching(objects, mod.attrs)
    if mod.kind == "remove":
        del out[index]
    else:
        out[index][str(mod.new_attr)] = mod.new_value
    return out


def _unique_descriptor(objects: Sequence[Mapping[str, Any]], index: int, rng: np.random.Generator) -> tuple[tuple[str, str], ...]:
    a = attributes(objects[index])
    subsets = [keys for n in range(len(ATTRS) + 1) for keys in combinations(ATTRS, n)]
    unique = [keys for keys in subsets if matching(objects, [(k, a[k]) for k in keys]) == [index]]
    keys = unique[int(rng.integers(len(unique)))]  # never empty: the position alone is unique
    return tuple((k, a[k]) for k in keys)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def random_mod(objects: Sequence[Mapping[str, Any]], rng: np.random.Generator, forbidden: Collection[tuple[str, str]]) -> Mod | None:
    """A random modification that applies to `objects`, or None if the drawn kind cannot."""
    kind = _pick(rng, KINDS)
    if kind == "add":
        free = [p for p in POSITIONS if p not in {POSITIONS[cell_of(o)] for o in objects}]
        pairs = [(s, c) for s in SHAPES for c in COLORS if (s, c) not in forbidden]
        if len(objects) >= MAX_OBJECTS or not free:
            return None
        shape, color = pairs[int(rng.integers(len(pairs)))]
        attrs = (("pos", _pick(rng, free)), ("size", _pick(rng, SIZES)), ("color", color), ("shape", shape))
        return Mod("add", attrs)
    if kind == "remove" and len(objects) < 2:
        return None
    index = int(rng.integers(len(objects)))
    attrs = _unique_descriptor(objects, index, rng)
    if kind == "remove":
        return Mod("remove", attrs)
    obj = objects[index]
    new_attr = _pick(rng, ("size", "color"))
    options = [v for v in (SIZES if new_attr == "size" else tuple(COLORS)) if v != obj[new_attr]]
    if new_attr == "color":
        options = [c for c in options if (obj["shape"], c) not in forbidden]
    mod = Mod("make", attrs, new_attr, _pick(rng, options))
    return mod if can_apply(mod, objects, forbidden) else None


def mod_record(mod: Mod, sources: list[int], targets: list[int]) -> dict[str, Any]:
    """One entry of CSS's `mods` list, with the fields of the released file."""
    a = dict(mod.attrs)
    return {
        "type": mod.kind,
        "from": sources,
        "to": targets,
        "to_str": mod.text,
        "str": [mod.kind],
        "target_shape": a.get("shape"),
        "target_pos": a.get("pos"),
        "target_size": a.get("size"),
        "target_color": a.get("color"),
        "make_new_color": mod.new_value if mod.new_attr == "color" else None,
        "make_new_size": mod.new_value if mod.new_attr == "size" else None,
    }
