"""The label table: defaults, edits with clear errors, JSON round trip."""

from __future__ import annotations

import pytest

from viewer.labels.table import LabelInfo, LabelTable


def test_defaults_are_the_five_chest_labels():
    table = LabelTable.default()
    assert table.values() == [1, 2, 3, 4, 5]
    assert table.by_name("Consolidation").value == 4
    assert table[3].name == "ground-glass opacity"


def test_add_rename_recolour_lock_remove():
    table = LabelTable.default()
    info = table.new("nodule")
    assert info.value == 6 and info.color != table[5].color
    table.update(6, name="solid nodule", color=(1, 2, 3), locked=True, opacity=0.5)
    assert table[6] == LabelInfo(6, "solid nodule", (1, 2, 3), 0.5, True, True)
    assert table.locked_values() == {6}
    table.update(1, visible=False)
    assert table.hidden_values() == {1}
    table.remove(6)
    assert 6 not in table and table.next_value() == 6


@pytest.mark.parametrize("bad", [
    lambda t: t.add(LabelInfo(1, "again", (0, 0, 0))),
    lambda t: t.new("Lung Left"),
    lambda t: t.update(2, name="lung left"),
    lambda t: t.update(2, value=9),
    lambda t: LabelInfo(0, "background", (0, 0, 0)),
    lambda t: LabelInfo(256, "x", (0, 0, 0)),
    lambda t: LabelInfo(7, " ", (0, 0, 0)),
    lambda t: LabelInfo(7, "x", (0, 300, 0)),
    lambda t: LabelInfo(7, "x", (0, 0, 0), opacity=2),
])
def test_invalid_edits_raise_value_errors(bad):
    with pytest.raises(ValueError):
        bad(LabelTable.default())


def test_json_round_trip_and_bad_json():
    table = LabelTable.default()
    table.update(4, locked=True, opacity=0.25)
    table.new("airway", (9, 9, 9))
    assert LabelTable.from_json(table.to_json()) == table
    with pytest.raises(ValueError, match="not valid JSON"):
        LabelTable.from_json("{")
    with pytest.raises(ValueError, match="entry 0"):
        LabelTable.from_json('{"labels": [{"value": 0, "name": "x", "color": [0, 0, 0]}]}')
    with pytest.raises(ValueError, match="labels"):
        LabelTable.from_json("[]")


def test_full_table_reports_it():
    table = LabelTable([LabelInfo(v, f"l{v}", (0, 0, 0)) for v in range(1, 256)])
    with pytest.raises(ValueError, match="full"):
        table.next_value()
