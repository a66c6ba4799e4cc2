"""Real CT volumes read into slice-classifier training data (`lunglens train light-squeezenet --real-*`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.services.volume_dataset import read_ct
from inference.lungs.select import segment_lungs_by
from inference.screening.config import ScreeningConfig
from inference.screening.steps import model_lesions
from inference.training.datasets.real_slices import (
    VOLUME_KINDS,
    RealSlices,
    read_slice_labels,
    slice_labels,
    volume_slices,
)
from inference.transforms.common import HUWindow


def case_name(path: str | Path) -> str:
    """A CT's case name: its folder's name, or its file's name without the volume suffix."""
    name = Path(path).resolve().name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def collect_real_slices(volumes: dict[str, list[str]], labels_path: str | Path | None, window: HUWindow, *,
                        lesion_shares: bool = True,
                        log: Callable[[str], None] = print) -> tuple[RealSlices, list[str]]:
    """Every lung slice of the CTs given per kind ("covid", "pneumonia", "negative"), with a line per CT for
    the model card; `lesion_shares`: with each slice's lesion share from screening's lesion segmenter (NaN
    where its weights are not installed).

    Raises:
        ValueError: an unknown kind, unreadable labels, or a COVID/pneumonia CT without slice labels (the
            message names the CT). The loader's `LoadError` for an unreadable CT (reported by the CLI).
    """
    labels = read_slice_labels(labels_path) if labels_path else {}
    out, sources = RealSlices.empty(), []
    for kind, paths in volumes.items():
        if kind not in VOLUME_KINDS:
            raise ValueError(f"unknown volume kind {kind!r}; expected one of {VOLUME_KINDS}")
        for path in paths:
            name = case_name(path)
            hu, spacing = read_ct(path)
            infected = None
            if kind != "negative":
                if name not in labels:
                    raise ValueError(f"{path}: no slice labels for case {name!r} in {labels_path}")
                try:
                    infected, _ = slice_labels(labels[name], len(hu))
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from None
            lungs = segment_lungs_by("threshold", hu, spacing).lungs
            lesions = model_lesions(hu, spacing, lungs, ScreeningConfig(), device="cpu") if lesion_shares else None
            part = volume_slices(hu, spacing, lungs, kind=kind, window=window, case=name, infected=infected,
                                 lesions=lesions)
            out.extend(part)
            line = (f"{name} ({kind}): {len(part)} lung slices, {int(part.labels.sum())} COVID, "
                    f"{int(part.val.sum())} held out")
            log(f"{path}: {line}")
            sources.append(line)
    return out, sources
