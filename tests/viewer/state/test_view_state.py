"""The Qt-free view model: slicing conventions, cursor, window, layers, measurements."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.core.measure import distance_mm, ellipse_stats
from viewer.core.volume import Volume
from viewer.core.windowing import PRESETS, GreyLUT, Window
from viewer.state.layers import HeatmapLayer, LabelLayer, LayerList, colormap_table
from viewer.state.slicing import Orientation, display_to_voxel, extract, pixel_spacing, voxel_to_display
from viewer.state.view_state import ViewerState


def marker_volume() -> Volume:
    """Canonical volume (z->S, y->P, x->L) with markers at known patient sides."""
    a = np.zeros((10, 12, 14), np.int16)
    a[9, 6, 7] = 1  # most superior slice
    a[5, 0, 7] = 2  # most anterior row
    a[5, 6, 13] = 3  # most patient-left column
    return Volume(a, spacing=(5.0, 1.0, 0.5))


def test_radiological_convention_of_each_view():
    vol = marker_volume()
    axial = extract(vol.array, Orientation.AXIAL, 5)
    assert axial[0, 7] == 2  # anterior at the top
    assert axial[6, -1] == 3  # patient left on the screen right
    coronal = extract(vol.array, Orientation.CORONAL, 6)
    assert coronal[0, 7] == 1  # superior at the top
    assert coronal[4, -1] == 3
    sagittal = extract(vol.array, Orientation.SAGITTAL, 7)
    assert sagittal[0, 6] == 1  # superior at the top
    assert sagittal[4, 0] == 2  # anterior on the left
    assert pixel_spacing(vol.spacing, Orientation.CORONAL) == (5.0, 0.5)
    assert pixel_spacing(vol.spacing, Orientation.SAGITTAL) == (5.0, 1.0)


@pytest.mark.parametrize("orientation", list(Orientation))
def test_display_and_voxel_coordinates_are_inverse(orientation):
    shape = (10, 12, 14)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 1000, shape)
    for _ in range(20):
        voxel = tuple(int(rng.integers(0, n)) for n in shape)
        row, col = voxel_to_display(shape, orientation, voxel)
        back = display_to_voxel(shape, orientation, voxel[orientation.axis], row, col)
        assert back == pytest.approx(voxel)
        assert extract(arr, orientation, voxel[orientation.axis])[int(row), int(col)] == arr[voxel]


def test_cursor_is_clamped_and_announced():
    state = ViewerState(marker_volume())
    seen = []
    state.cursor_changed.connect(seen.append)
    state.set_cursor((100, -5, 3))
    assert state.cursor == (9, 0, 3)
    state.step(Orientation.CORONAL, 4)
    assert state.cursor == (9, 4, 3)
    state.set_cursor((9, 4, 3))  # no change, no event
    assert seen == [(9, 0, 3), (9, 4, 3)]
    assert state.hu_at((9, 6, 7)) == 1 and state.hu_at((99, 0, 0)) is None


def test_state_reorients_any_acquisition_to_canonical():
    vol = marker_volume()
    flipped = Volume(vol.array[::-1].copy(), vol.spacing, tuple(vol.index_to_lps((9, 0, 0))),
                     direction=vol.direction * np.array([-1, 1, 1]))
    state = ViewerState(flipped)
    assert np.array_equal(state.volume.array, vol.array)


def test_window_presets_and_lut():
    assert PRESETS["lung"] == Window(-600, 1500) and PRESETS["mediastinum"] == Window(40, 400)
    lut = GreyLUT(PRESETS["lung"])
    grey = lut(np.array([[-1350, -600, 150, 3000]], np.int16))
    assert grey.tolist() == [[0, 128, 255, 255]]
    state = ViewerState(marker_volume())
    state.apply_preset("bone")
    assert state.window == Window(400, 1800)
    with pytest.raises(KeyError):
        state.apply_preset("nope")


def test_label_layer_colours_opacity_and_hidden_labels():
    data = np.zeros((2, 3, 3), np.uint8)
    data[0, 1, 1] = 3
    data[0, 0, 0] = 4
    layer = LabelLayer("m", data, opacity=0.5)
    rgba = layer.rgba(Orientation.AXIAL, 0)
    assert tuple(rgba[1, 1]) == (255, 200, 0, 128)
    assert rgba[2, 2, 3] == 0  # background transparent
    layer.update(hidden_labels={4})
    assert layer.rgba(Orientation.AXIAL, 0)[0, 0, 3] == 0


def test_heatmap_threshold_and_colormap():
    data = np.linspace(0, 1, 27, dtype=np.float32).reshape(3, 3, 3)
    layer = HeatmapLayer("cam", data, threshold=0.5, opacity=1.0, colormap="hot")
    rgba = layer.rgba(Orientation.AXIAL, 2)
    assert (rgba[..., 3] > 0).sum() == 9  # every value >= 0.5
    assert tuple(rgba[-1, -1, :3]) == tuple(colormap_table("hot")[-1])
    assert layer.rgba(Orientation.AXIAL, 0)[..., 3].max() == 0


def test_layer_list_events_and_grid_check():
    layers = LayerList()
    events = []
    layers.changed.connect(lambda _l: events.append("list"))
    layers.layer_changed.connect(lambda layer: events.append(layer.name))
    layer = layers.add(LabelLayer("a", np.zeros((2, 2, 2), np.uint8)), (2, 2, 2))
    layer.update(opacity=0.2)
    with pytest.raises(ValueError, match="shape"):
        layers.add(LabelLayer("b", np.zeros((1, 2, 2), np.uint8)), (2, 2, 2))
    layers.remove("a")
    assert events == ["list", "a", "list"]


def test_distance_and_ellipse_statistics():
    vol = marker_volume()
    assert distance_mm(vol, (0, 0, 0), (2, 0, 4)) == pytest.approx(np.hypot(10.0, 2.0))
    img = np.full((40, 40), -800.0)
    img[10:30, 10:30] = 40.0
    s = ellipse_stats(img, (20, 20), (5, 5), (0.5, 0.5))
    assert s.mean == pytest.approx(40.0) and s.std == pytest.approx(0.0)
    assert s.area_mm2 == pytest.approx(s.pixels * 0.25)
    assert abs(s.area_mm2 - np.pi * 2.5 * 2.5) < 2.0


def test_slab_projections_equal_numpys_over_the_slab():
    from viewer.state.slicing import Orientation, extract, extract_slab, slab_range

    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1000, (20, 16, 12)).astype(np.int16)
    spacing = (2.0, 0.5, 1.0)
    assert slab_range(20, 10, 10.0, 2.0) == (8, 13)  # 5 slices of 2 mm centred on 10
    assert slab_range(20, 0, 10.0, 2.0) == (0, 3) and slab_range(20, 19, 10.0, 2.0) == (17, 20)  # clipped
    assert slab_range(20, 7, 0.0, 2.0) == (7, 8) and slab_range(20, 7, 0.4, 2.0) == (7, 8)
    for orientation, axis in ((Orientation.AXIAL, 0), (Orientation.CORONAL, 1), (Orientation.SAGITTAL, 2)):
        index = vol.shape[axis] // 2
        start, stop = slab_range(vol.shape[axis], index, 4.0, spacing[axis])
        assert stop - start == round(4.0 / spacing[axis])
        cut = [slice(None)] * 3
        cut[axis] = slice(start, stop)
        slab = vol[tuple(cut)]
        for projection, reduce in (("mip", np.max), ("minip", np.min), ("mean", np.mean)):
            expected = extract(np.expand_dims(reduce(slab, axis=axis), axis), orientation, 0)
            got = extract_slab(vol, orientation, index, 4.0, spacing, projection)
            np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert np.array_equal(extract_slab(vol, orientation, index, 0.0, spacing), extract(vol, orientation, index))
    x_major = np.ascontiguousarray(vol.transpose(2, 0, 1))
    for projection in ("mip", "minip", "mean"):
        np.testing.assert_array_equal(extract_slab(vol, Orientation.SAGITTAL, 6, 5.0, spacing, projection, x_major),
                                      extract_slab(vol, Orientation.SAGITTAL, 6, 5.0, spacing, projection))
    with pytest.raises(ValueError, match="projection must be one of"):
        extract_slab(vol, Orientation.AXIAL, 3, 4.0, spacing, "sum")


def test_slab_state_announces_changes_and_refuses_bad_values():
    from viewer.core.volume import Volume

    state = ViewerState(Volume(np.zeros((4, 4, 4), np.int16)))
    seen = []
    state.slab_changed.connect(seen.append)
    state.set_slab(10.0, "minip")
    state.set_slab(10.0, "minip")  # no change, no event
    state.set_slab(0.0)
    assert seen == [(10.0, "minip"), (0.0, "minip")]
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="slab thickness"):
            state.set_slab(bad)
    with pytest.raises(ValueError, match="projection"):
        state.set_slab(5.0, "avg")


def test_upsample_rows_interpolates_between_row_centres():
    from viewer.state.slicing import upsample_rows

    image = np.array([[0, 10], [100, 110]], np.uint8)
    up = upsample_rows(image, 4)
    assert up.shape == (8, 2) and up.dtype == np.uint8
    assert up[:2, 0].tolist() == [0, 0] and up[-2:, 0].tolist() == [100, 100]  # edges repeat
    assert up[2:6, 0].tolist() == [12, 38, 62, 88]  # linear between the two row centres
    assert np.all(np.diff(up[:, 1].astype(int)) >= 0)
    assert upsample_rows(image, 1) is image
