"""Lesion instances as a label map (one value per instance, or merged) and as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.services.instance_export import MAX_INSTANCE_SEGMENTS, MERGED_VALUE, instance_label_map, instances_json


def _instances(n: int) -> tuple[np.ndarray, list[dict]]:
    labels = np.zeros((2, 20, 400), np.uint16)
    records = []
    for k in range(n):
        labels[k % 2, :, k] = k + 1  # a column each
        records.append({"id": k + 1, "slice": k % 2, "score": round(0.3 + 0.6 * k / max(n, 1), 4)})
    return labels, records


def test_one_value_per_instance_best_first_and_merged():
    labels, records = _instances(4)
    out, table, kept = instance_label_map(labels, records, 0.5, per_instance=True)
    assert out.dtype == np.uint8 and [r["id"] for r in kept] == [4, 3]  # scores 0.75, 0.6; the rest below 0.5
    assert [r["value"] for r in kept] == [1, 2] and table.values() == [1, 2]
    np.testing.assert_array_equal(out == 1, labels == 4)
    np.testing.assert_array_equal(out == 2, labels == 3)
    assert not out[(labels == 1) | (labels == 2)].any()
    merged, table, kept = instance_label_map(labels, records, 0.0, per_instance=False)
    np.testing.assert_array_equal(merged, np.where(labels > 0, MERGED_VALUE, 0))
    assert table.values() == [MERGED_VALUE] and len(kept) == 4
    doc = json.loads(instances_json(kept, 0.0, "covid-ct-mask-net", "x.dcm"))
    assert doc["label_map"] == "x.dcm" and [r["id"] for r in doc["instances"]] == [4, 3, 2, 1]


def test_too_many_or_none_are_refused_with_the_way_out():
    labels, records = _instances(MAX_INSTANCE_SEGMENTS + 1)
    with pytest.raises(ValueError, match="save them merged, or raise the minimum score"):
        instance_label_map(labels, records, 0.0, per_instance=True)
    assert instance_label_map(labels, records, 0.0, per_instance=False)[0].max() == MERGED_VALUE
    with pytest.raises(ValueError, match="nothing to save"):
        instance_label_map(labels, records, 0.99, per_instance=False)
