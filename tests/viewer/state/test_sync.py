"""Prior comparison: two viewer states linked by patient position (`viewer.state.sync`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from viewer.core.volume import AXIAL_DIRECTION, SeriesMetadata, Volume
from viewer.core.windowing import Window
from viewer.state.slicing import Orientation
from viewer.state.sync import CursorLink
from viewer.state.view_state import ViewerState


def volume(shape=(40, 30, 30), spacing=(2.5, 1.0, 1.0), origin=(0.0, 0.0, 0.0), frame="") -> Volume:
    md = dataclasses.replace(SeriesMetadata(), frame_of_reference_uid=frame)
    return Volume(np.zeros(shape, np.int16), spacing=spacing, origin=origin, metadata=md)


def test_same_frame_of_reference_links_by_absolute_position():
    # the current series: 2.5 mm slices from z = 0; the other: 1.25 mm slices from z = 10 mm, same frame
    a = ViewerState(volume(frame="1.2.3"))
    b = ViewerState(volume(shape=(60, 30, 30), spacing=(1.25, 1.0, 1.0), origin=(0.0, 0.0, 10.0), frame="1.2.3"))
    link = CursorLink(a, b)
    assert link.absolute
    a.set_slice(Orientation.AXIAL, 20)  # z = 50 mm
    assert b.cursor[0] == 32  # (50 - 10) / 1.25
    assert np.allclose(b.volume.index_to_lps(b.cursor)[2], 50.0)
    b.set_slice(Orientation.AXIAL, 8)  # z = 20 mm: `a` follows back
    assert a.cursor[0] == 8
    # in-plane: the crosshair lands on the same patient point
    a.set_cursor((10, 5, 25))
    assert b.cursor[1:] == (5, 25)


def test_prior_study_links_by_offset_and_relinks_where_the_user_aligned_it():
    # a prior scanned 100 mm further along the table, in another frame of reference
    a = ViewerState(volume(frame="1.2.3"))
    b = ViewerState(volume(origin=(0.0, 0.0, 100.0), frame="9.9.9"))
    link = CursorLink(a, b)
    assert not link.absolute
    a.set_slice(Orientation.AXIAL, 12)
    assert b.cursor[0] == 12  # centres aligned at first: same slice of the same stack
    # the user unlinks, pages the prior 4 slices on to the matching anatomy, and links again
    link.unlink()
    b.step(Orientation.AXIAL, 4)
    a.step(Orientation.AXIAL, 1)
    assert (a.cursor[0], b.cursor[0]) == (13, 16)  # no following while unlinked
    link.relink()
    a.step(Orientation.AXIAL, 2)
    assert b.cursor[0] == 18  # the 3-slice offset of the user's alignment is kept


def test_window_and_slab_follow_and_positions_clamp_at_the_shorter_series():
    a = ViewerState(volume(shape=(80, 30, 30), frame="1"))
    b = ViewerState(volume(shape=(20, 30, 30), frame="1"))
    CursorLink(a, b)
    a.set_window(Window(-600, 1500))
    assert b.window == Window(-600, 1500)
    b.set_slab(10.0, "minip")
    assert (a.slab_mm, a.projection) == (10.0, "minip")
    a.set_slice(Orientation.AXIAL, 70)  # beyond the short series: its last slice
    assert b.cursor[0] == 19
    assert a.cursor[0] == 70  # and `a` is not dragged back


def test_unlinked_states_are_independent():
    a, b = ViewerState(volume(frame="1")), ViewerState(volume(frame="1"))
    link = CursorLink(a, b)
    link.unlink()
    assert not link.linked
    a.set_slice(Orientation.AXIAL, 3)
    a.set_window(Window(40, 400))
    assert b.cursor[0] != 3 and b.window != Window(40, 400)


@pytest.mark.parametrize("flip", [False, True])
def test_link_maps_through_each_volumes_own_orientation(flip):
    """A prior stored feet-first (slices toward I) still lines up: the states hold canonical volumes."""
    a = ViewerState(volume(frame="1"))
    direction = AXIAL_DIRECTION.copy()
    if flip:
        direction[:, 0] *= -1  # array slices run toward the feet
    origin = (0.0, 0.0, 97.5) if flip else (0.0, 0.0, 0.0)
    raw = volume(frame="1")
    b = ViewerState(Volume(raw.array, spacing=raw.spacing, origin=origin, direction=direction,
                           metadata=raw.metadata))
    CursorLink(a, b)
    a.set_slice(Orientation.AXIAL, 30)
    assert np.allclose(b.volume.index_to_lps(b.cursor), a.volume.index_to_lps(a.cursor))


def test_oblique_planes_follow_both_ways():
    a, b = ViewerState(volume(frame="1")), ViewerState(volume(frame="1"))
    link = CursorLink(a, b)
    a.rotate_planes(Orientation.AXIAL, 0.5)
    assert b.is_oblique(Orientation.CORONAL)
    np.testing.assert_array_equal(b.turns[Orientation.CORONAL], a.turns[Orientation.CORONAL])
    b.reset_planes()
    assert not a.oblique
    link.unlink()
    a.rotate_planes(Orientation.AXIAL, 0.2)
    assert not b.oblique
