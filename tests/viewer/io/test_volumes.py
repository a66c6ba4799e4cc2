"""Volume geometry and NIfTI / NRRD / MetaImage round trips."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from viewer.core.errors import LoadError
from viewer.core.volume import Volume, volume_from_sitk
from viewer.io.label_grid import read_overlay_on_grid
from viewer.io.nifti_raw import nifti_scaled, open_nifti, read_layout
from viewer.io.volumes import open_volume, read_volume_file, write_unit_map, write_volume


def oblique_volume() -> Volume:
    rng = np.random.default_rng(1)
    a = np.radians(20)
    # columns: z axis, y axis, x axis (right-handed)
    x = np.array([np.cos(a), np.sin(a), 0.0])
    y = np.array([-np.sin(a), np.cos(a), 0.0])
    z = np.cross(x, y)
    return Volume(rng.integers(-1024, 1500, (6, 9, 11)).astype(np.int16), spacing=(2.5, 0.8, 0.6),
                  origin=(-10.0, 5.0, 42.0), direction=np.stack([z, y, x], axis=1))


def test_index_lps_round_trip_and_affine():
    vol = oblique_volume()
    idx = np.array([[0, 0, 0], [5, 8, 10], [2.5, 3.25, 7.0]])
    pts = vol.index_to_lps(idx)
    assert pts[0] == pytest.approx(vol.origin)
    assert np.allclose(vol.lps_to_index(pts), idx)
    # one step along array x moves spacing_x along the x direction
    assert np.linalg.norm(vol.index_to_lps([0, 0, 1]) - vol.index_to_lps([0, 0, 0])) == pytest.approx(0.6)


def test_sitk_round_trip_keeps_geometry_and_point_mapping():
    vol = oblique_volume()
    img = vol.to_sitk()
    assert img.GetSize() == (11, 9, 6)
    p = img.TransformIndexToPhysicalPoint((10, 8, 5))  # (x, y, z) index
    assert p == pytest.approx(vol.index_to_lps([5, 8, 10]))
    back = volume_from_sitk(img)
    assert np.array_equal(back.array, vol.array)
    assert np.allclose(back.affine, vol.affine)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_file_round_trip(tmp_path, suffix):
    vol = oblique_volume()
    path = write_volume(vol, tmp_path / f"ct{suffix}")
    back = open_volume(path)
    assert np.array_equal(back.array, vol.array)
    assert np.allclose(back.affine, vol.affine, atol=1e-4)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_nifti_written_by_another_tool_is_read_in_lps(tmp_path):
    arr = np.zeros((4, 5, 6), np.int16)
    arr[1, 2, 3] = 100
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 3.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "x.nii.gz"))
    vol = read_volume_file(tmp_path / "x.nii.gz")
    k, j, i = np.argwhere(vol.array == 100)[0]
    assert vol.index_to_lps([k, j, i]) == pytest.approx(img.TransformIndexToPhysicalPoint((3, 2, 1)))


def test_bad_volume_files_give_clear_errors(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(LoadError, match="junk.nii.gz"):
        open_volume(tmp_path / "junk.nii.gz")
    rgb = sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(LoadError, match="components"):
        open_volume(tmp_path / "rgb.nrrd")
    with pytest.raises(ValueError, match="unsupported output"):
        write_volume(oblique_volume(), tmp_path / "x.png")


def test_raw_values_without_hu_offset_are_flagged(tmp_path):
    vol = Volume(np.full((3, 4, 4), 2000, np.int16))
    vol.array[0] = 0
    write_volume(vol, tmp_path / "raw.nii.gz")
    assert any("HU offset" in w for w in read_volume_file(tmp_path / "raw.nii.gz").warnings)


def test_volume_validates_its_geometry():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=np.ones((3, 3)))
    vol = oblique_volume()
    with pytest.raises(ValueError, match="shape"):
        vol.with_array(np.zeros((1, 2, 3)))
    mask = vol.with_array(vol.array > 0)
    assert mask.same_grid(vol) and mask.array.dtype == bool


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_unit_map_is_8_bit_scaled_and_reads_back_as_floats(tmp_path, suffix):
    rng = np.random.default_rng(4)
    heat = rng.random((6, 9, 11)).astype(np.float32)
    heat[:2] = 0.0
    heat[2, 0, :3] = (1.0, 0.5 / 255, 1.5 / 255)  # the ends and half-steps round to the nearest step
    vol = oblique_volume().with_array(heat[::-1, :, ::-1])  # any strides
    path = write_unit_map(vol, tmp_path / f"heat{suffix}")
    with open_nifti(path) as fh:
        head = fh.read(352)
    layout = read_layout(head)
    assert layout is not None and layout.datatype == 2  # uint8 voxels ...
    assert np.frombuffer(head[112:120], "<f4").tolist() == pytest.approx([1 / 255, 0.0])  # ... scaled by 1/255
    image = sitk.ReadImage(str(path))  # ITK applies the scaling: a float map
    assert image.GetPixelID() == sitk.sitkFloat32
    back = read_volume_file(path)
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.array, vol.array, atol=0.5 / 255 + 1e-6)
    assert back.array.min() == 0.0 and back.array.max() == pytest.approx(1.0)
    assert back.spacing == pytest.approx(vol.spacing) and np.allclose(back.direction, vol.direction, atol=1e-6)
    assert np.allclose(back.origin, vol.origin, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == [f"heat{suffix}"]  # no scratch file left
    # the header is ITK's own for the whole 8-bit volume, the scaling apart
    steps = np.floor(np.asarray(vol.array) * 255 + 0.5).astype(np.uint8)
    sitk.WriteImage(vol.with_array(steps).to_sitk(), str(tmp_path / "itk.nii"))
    itk = (tmp_path / "itk.nii").read_bytes()
    with open_nifti(path) as fh:
        ours = fh.read()
    assert len(ours) == len(itk) and ours[:112] == itk[:112] and ours[120:] == itk[120:]


@pytest.mark.parametrize("values", [np.array([-0.1, 0.5]), np.array([0.2, 1.5]), np.array([np.nan, 0.5])])
def test_a_map_outside_0_1_is_written_as_float32_unchanged(tmp_path, values):
    heat = np.resize(values, (6, 9, 11)).astype(np.float32)
    path = write_unit_map(oblique_volume().with_array(heat), tmp_path / "map.nii.gz")
    with open_nifti(path) as fh:
        assert read_layout(fh.read(352)).datatype == 16  # float32
    back = read_volume_file(path).array
    finite = np.isfinite(heat)
    assert np.array_equal(back[finite], heat[finite])


def test_an_all_zero_unit_map_still_opens_as_a_heat_map(tmp_path):
    """A clear negative's heat map is all zero; stored scaled, it is still a map, not an empty label layer."""
    ct = oblique_volume()
    path = write_unit_map(ct.with_array(np.zeros(ct.shape, np.float32)), tmp_path / "heatmap.nii.gz")
    assert nifti_scaled(path)
    kind, data = read_overlay_on_grid(path, ct)
    assert kind == "heatmap" and data.dtype == np.float32 and not data.any()
    labels = write_volume(ct.with_array(np.zeros(ct.shape, np.uint8)), tmp_path / "labels.nii.gz")
    assert not nifti_scaled(labels) and read_overlay_on_grid(labels, ct)[0] == "labels"
