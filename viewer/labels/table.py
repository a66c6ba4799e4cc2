"""The label table of an editable label map: value, name, colour, opacity, visibility, lock.

Qt-free. Serialised as a small JSON document (the sidecar of a NIfTI label map).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from viewer.labels.colors import DEFAULT_LABEL_COLORS, DEFAULT_LABEL_NAMES, RGB, fallback_color

MAX_LABEL = 255  # label maps are uint8
FORMAT = "lunglens-label-table/1"


@dataclass(frozen=True)
class LabelInfo:
    """One row of the label table. Value 0 is background and never appears here."""

    value: int
    name: str
    color: RGB
    opacity: float = 1.0
    visible: bool = True
    locked: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 1 <= self.value <= MAX_LABEL:
            raise ValueError(f"label value must be an integer 1..{MAX_LABEL}, got {self.value!r}")
        if not str(self.name).strip():
            raise ValueError("label name must not be empty")
        color = tuple(int(c) for c in self.color)
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ValueError(f"label colour must be three integers 0..255, got {self.color!r}")
        if not 0.0 <= float(self.opacity) <= 1.0:
            raise ValueError(f"label opacity must be in [0, 1], got {self.opacity!r}")
        object.__setattr__(self, "color", color)
        object.__setattr__(self, "name", str(self.name).strip())
        object.__setattr__(self, "opacity", float(self.opacity))


class LabelTable:
    """An ordered set of labels keyed by value, with unique names."""

    def __init__(self, labels: list[LabelInfo] | None = None) -> None:
        self._labels: dict[int, LabelInfo] = {}
        for info in labels or []:
            self.add(info)

    @classmethod
    def default(cls) -> LabelTable:
        """Lung left, lung right, ground-glass opacity, consolidation, other lesion (values 1-5)."""
        return cls([LabelInfo(v, DEFAULT_LABEL_NAMES[v], DEFAULT_LABEL_COLORS[v]) for v in sorted(DEFAULT_LABEL_NAMES)])

    def __iter__(self) -> Iterator[LabelInfo]:
        return iter(sorted(self._labels.values(), key=lambda i: i.value))

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, value: object) -> bool:
        return value in self._labels

    def __getitem__(self, value: int) -> LabelInfo:
        try:
            return self._labels[value]
        except KeyError:
            raise KeyError(f"no label with value {value}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelTable) and list(self) == list(other)

    def values(self) -> list[int]:
        return sorted(self._labels)

    def by_name(self, name: str) -> LabelInfo:
        for info in self._labels.values():
            if info.name.lower() == name.strip().lower():
                return info
        raise KeyError(f"no label named {name!r}")

    def next_value(self) -> int:
        for v in range(1, MAX_LABEL + 1):
            if v not in self._labels:
                return v
        raise ValueError(f"the label table is full ({MAX_LABEL} labels)")

    def add(self, info: LabelInfo) -> LabelInfo:
        if info.value in self._labels:
            raise ValueError(f"label value {info.value} is already used by {self._labels[info.value].name!r}")
        self._check_name(info.name, None)
        self._labels[info.value] = info
        return info

    def new(self, name: str, color: RGB | None = None) -> LabelInfo:
        """Add a label with the first free value and a distinct default colour."""
        value = self.next_value()
        return self.add(LabelInfo(value, name, color or fallback_color(value)))

    def update(self, label: int, /, **changes: Any) -> LabelInfo:
        """Rename, recolour, change opacity/visible/locked of one label (its value cannot change)."""
        if "value" in changes:
            raise ValueError("a label's value cannot change; add a new label and relabel the voxels")
        info = replace(self[label], **changes)
        if "name" in changes:
            self._check_name(info.name, label)
        self._labels[label] = info
        return info

    def remove(self, value: int) -> LabelInfo:
        info = self[value]
        del self._labels[value]
        return info

    def locked_values(self) -> set[int]:
        return {v for v, i in self._labels.items() if i.locked}

    def colors(self) -> dict[int, RGB]:
        return {v: i.color for v, i in self._labels.items()}

    def names(self) -> dict[int, str]:
        return {v: i.name for v, i in self._labels.items()}

    def hidden_values(self) -> set[int]:
        return {v for v, i in self._labels.items() if not i.visible}

    def copy(self) -> LabelTable:
        return LabelTable(list(self))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "labels": [{**asdict(i), "color": list(i.color)} for i in self]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelTable:
        """Parse `to_dict` output; raises ValueError with what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
            raise ValueError("not a LungLens label table: expected an object with a 'labels' list")
        fmt = data.get("format", FORMAT)
        if not str(fmt).startswith("lunglens-label-table/"):
            raise ValueError(f"unknown label table format {fmt!r}")
        labels = []
        for n, row in enumerate(data["labels"]):
            try:
                labels.append(LabelInfo(int(row["value"]), row["name"], tuple(row["color"]),
                                        float(row.get("opacity", 1.0)), bool(row.get("visible", True)),
                                        bool(row.get("locked", False))))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"label table entry {n} is invalid: {exc}") from None
        return cls(labels)

    @classmethod
    def from_json(cls, text: str) -> LabelTable:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"label table is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def _check_name(self, name: str, own_value: int | None) -> None:
        for v, other in self._labels.items():
            if v != own_value and other.name.lower() == name.strip().lower():
                raise ValueError(f"label name {name!r} is already used by value {v}")
