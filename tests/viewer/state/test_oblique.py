"""Oblique MPR geometry (`viewer.state.oblique`) and the state's turned planes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from viewer.core.volume import Volume
from viewer.state.oblique import PlaneGrid, rotation, step_mm
from viewer.state.slicing import Orientation, extract
from viewer.state.view_state import ViewerState


def random_volume(shape=(20, 24, 28), spacing=(1.0, 1.0, 1.0), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1000, 1000, shape).astype(np.int16), spacing=spacing)


@pytest.mark.parametrize("orientation", list(Orientation))
def test_an_unturned_plane_samples_exactly_the_orthogonal_slice(orientation):
    vol = random_volume()
    point = (7, 11, 13)
    grid = PlaneGrid(vol.shape, vol.spacing, orientation, np.eye(3), point)
    image = grid.sample(vol.array)
    np.testing.assert_array_equal(image, extract(vol.array, orientation, point[orientation.axis]))
    # screen <-> voxel round trip, and the crosshair sits on its voxel's pixel centre
    y, x = grid.screen_of(point)
    np.testing.assert_allclose(grid.voxel_of(y, x), point, atol=1e-9)


def test_thick_slices_are_sampled_at_the_finer_pixel_spacing():
    vol = random_volume(spacing=(5.0, 0.8, 0.8))
    grid = PlaneGrid(vol.shape, vol.spacing, Orientation.CORONAL, rotation(np.array([1.0, 0, 0]), 0.3), (10, 12, 14))
    assert grid.out_shape == (125, 28)  # 20 slices x 5 mm in 0.8 mm rows; 28 columns of 0.8 mm
    assert grid.sample(vol.array).shape == grid.out_shape


def test_turning_the_axial_crosshair_shows_an_oblique_vessel_along_its_length():
    """A vessel running at 30 degrees in the axial plane: the coronal plane turned by 30 degrees about the axial
    normal contains it, so it shows as one bright band across the view; the plain coronal cuts it in a dot."""
    n = 64
    a = np.full((16, n, n), -800, np.int16)
    t = np.linspace(-28, 28, 400)
    angle = math.radians(30)
    for s in t:  # the vessel: a 2-voxel tube through the centre, in axial slices 6..9
        j, i = 31.5 + s * math.sin(angle), 31.5 + s * math.cos(angle)
        a[6:10, int(round(j)) - 1: int(round(j)) + 1, int(round(i)) - 1: int(round(i)) + 1] = 300
    state = ViewerState(Volume(a, spacing=(1.0, 1.0, 1.0)))
    state.set_cursor((8, 31.5, 31.5))
    plain = state.plane_grid(Orientation.CORONAL).sample(state.volume.array)
    assert (plain[7] > 0).sum() <= 4  # the plain coronal plane cuts the vessel across
    state.rotate_planes(Orientation.AXIAL, angle)  # clockwise on the axial screen, as the vessel runs
    assert state.is_oblique(Orientation.CORONAL) and state.is_oblique(Orientation.SAGITTAL)
    assert not state.is_oblique(Orientation.AXIAL)  # the view turned about keeps its plane
    turned = state.plane_grid(Orientation.CORONAL).sample(state.volume.array)
    row = 16 - 1 - 8  # the crosshair's row: slice 8 of 16, superior at the top
    assert (turned[row] > 0).sum() >= 40  # the vessel's whole length
    # in the axial view the coronal plane's line now runs along the vessel: 30 degrees clockwise
    axial = state.plane_grid(Orientation.AXIAL)
    coronal_normal = state.plane_grid(Orientation.CORONAL).normal
    assert axial.line_angle(coronal_normal) == pytest.approx(30.0)
    state.reset_planes()
    assert not state.oblique
    np.testing.assert_array_equal(state.plane_grid(Orientation.CORONAL).sample(state.volume.array), plain)


def test_paging_an_oblique_view_moves_along_its_normal_by_one_voxels_reach():
    state = ViewerState(random_volume(spacing=(5.0, 1.0, 1.0)))
    state.rotate_planes(Orientation.CORONAL, math.radians(45))  # the axial plane tilts 45 degrees
    normal = state.plane_grid(Orientation.AXIAL).normal
    assert abs(normal[0]) == pytest.approx(math.sqrt(0.5))
    start = state.point * np.array(state.volume.spacing)
    state.step(Orientation.AXIAL, 2)
    moved = state.point * np.array(state.volume.spacing) - start
    np.testing.assert_allclose(np.cross(moved, normal), 0, atol=1e-9)  # along the normal
    assert np.linalg.norm(moved) == pytest.approx(2 * step_mm(normal, (5.0, 1.0, 1.0)))
    assert 1.0 < step_mm(normal, (5.0, 1.0, 1.0)) < 5.0


def test_crosshair_within_an_oblique_plane_moves_no_pixel():
    state = ViewerState(random_volume())
    state.rotate_planes(Orientation.AXIAL, 0.4)
    grid = state.plane_grid(Orientation.CORONAL)
    before = grid.sample(state.volume.array)
    # move the crosshair within the turned coronal plane: along its row and column directions
    world = state.point + 3 * grid.row + 2 * grid.col  # spacing 1: voxels are mm
    state.set_cursor(world)
    after = state.plane_grid(Orientation.CORONAL)
    np.testing.assert_array_equal(after.sample(state.volume.array), before)
    y, x = after.screen_of(state.point)
    y0, x0 = grid.screen_of(world - 3 * grid.row - 2 * grid.col)
    assert (y - y0, x - x0) == pytest.approx((3.0, 2.0))


def test_edge_letters_name_the_patient_directions_of_a_turned_plane():
    from viewer.state.oblique import direction_letters, edge_letters

    grid = PlaneGrid((10, 10, 10), (1.0, 1.0, 1.0), Orientation.CORONAL, np.eye(3), (5, 5, 5))
    assert edge_letters(grid) == Orientation.CORONAL.labels  # unturned: the orthogonal view's letters
    turned = PlaneGrid((10, 10, 10), (1.0, 1.0, 1.0), Orientation.CORONAL,
                       rotation(np.array([1.0, 0, 0]), math.radians(35)), (5, 5, 5))
    letters = edge_letters(turned)
    assert letters["top"] == "S" and letters["bottom"] == "I"
    assert {letters["left"], letters["right"]} == {"RA", "LP"} or {letters["left"], letters["right"]} == {"RP", "LA"}
    assert direction_letters(np.array([0.1, -0.3, 0.9])) == "LA"


def test_paging_an_orthogonal_view_keeps_the_turned_planes_in_place():
    """The crosshair's fractions survive paging: the coronal plane turned about the axial normal holds the axial
    direction, so paging the axial view moves no pixel of it (it shifted by half a millimetre when the fractions
    were dropped)."""
    state = ViewerState(random_volume())
    state.rotate_planes(Orientation.AXIAL, 0.7)
    centre = state.plane_grid(Orientation.CORONAL).centre
    state.step(Orientation.AXIAL, 3)
    state.set_slice(Orientation.AXIAL, 2)
    np.testing.assert_allclose(state.plane_grid(Orientation.CORONAL).centre, centre, atol=1e-9)
    assert state.cursor[0] == 2
