"""The synthetic chest-CT phantom: determinism, geometry, HU per tissue and the ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from viewer.core.volume import AXIAL_DIRECTION, volume_from_sitk
from viewer.synthetic.phantom import LABELS, MASK_NAMES, Lesion, Phantom, PhantomConfig, make_phantom

# small and coarse (6 mm slices, 3.6 mm pixels over the usual 288 x 346 mm field): fast, same anatomy
SMALL = dict(shape=(48, 96, 96), spacing=(6.0, 3.6, 3.6), vessel_min_radius_mm=1.0)


@pytest.fixture(scope="module")
def clean() -> Phantom:
    """Noise-free, with every kind of lesion."""
    return make_phantom(PhantomConfig(**SMALL, n_ggo=2, n_consolidation=2, n_nodules=2, noise_sd=0.0, seed=3))


@pytest.fixture(scope="module")
def noisy() -> Phantom:
    return make_phantom(PhantomConfig(**SMALL, seed=3))


def lungs(ph: Phantom) -> np.ndarray:
    return ph.masks["lung_left"] | ph.masks["lung_right"]


def test_same_config_is_bit_identical_and_seeds_differ(noisy):
    again = make_phantom(PhantomConfig(**SMALL, seed=3))
    assert np.array_equal(again.volume.array, noisy.volume.array)
    for name in MASK_NAMES:
        assert np.array_equal(again.masks[name], noisy.masks[name]), name
    assert again.lesions == noisy.lesions
    assert again.volume.metadata == noisy.volume.metadata

    other = make_phantom(PhantomConfig(**SMALL, seed=4))
    assert not np.array_equal(other.masks["lung_left"], noisy.masks["lung_left"])
    assert [les.center_lps for les in other.lesions] != [les.center_lps for les in noisy.lesions]
    vml = np.prod(SMALL["spacing"]) / 1000
    v3, v4 = lungs(noisy).sum() * vml, lungs(other).sum() * vml
    assert 0.0 < abs(v3 - v4) / v3 < 0.2  # a little different, not another body


def test_overrides_match_the_config():
    a = make_phantom(PhantomConfig(**SMALL, n_ggo=0, n_consolidation=0, seed=1))
    b = make_phantom(PhantomConfig(**SMALL), n_ggo=0, n_consolidation=0, seed=1)
    assert a.config == b.config
    assert np.array_equal(a.volume.array, b.volume.array)


@pytest.mark.parametrize("bad", [dict(shape=(2, 8, 8)), dict(spacing=(1.0, 0.0, 1.0)), dict(n_ggo=-1),
                                 dict(noise_sd=-1.0)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        PhantomConfig(**bad)


def test_shape_dtype_geometry_and_metadata(noisy):
    vol = noisy.volume
    assert vol.shape == SMALL["shape"] and vol.array.dtype == np.int16
    assert vol.spacing == SMALL["spacing"]
    assert np.allclose(vol.direction, AXIAL_DIRECTION)
    assert vol.orientation_code() == "LPS"  # x, y, z toward left, posterior, superior (DICOM order)
    centre = vol.index_to_lps((np.array(vol.shape) - 1) / 2.0)
    assert np.allclose(centre, 0.0, atol=1e-6)  # field of view centred on the patient axis
    assert vol.array.min() >= -1024 and vol.array.max() <= 3071
    md = vol.metadata
    assert md.modality == "CT" and md.patient_name == "PHANTOM^LUNGLENS"
    assert md.series_description and md.study_instance_uid.startswith("2.25.")
    assert len(md.series_instance_uid) <= 64
    assert md.study_instance_uid != md.series_instance_uid
    assert set(noisy.masks) == set(MASK_NAMES)
    for name, m in noisy.masks.items():
        assert m.dtype == bool and m.shape == vol.shape, name
    assert noisy.config == PhantomConfig(**SMALL, seed=3)


def test_hu_of_each_tissue(clean, noisy):
    a = clean.volume.array
    m = clean.masks
    lung = lungs(clean)
    assert -900 <= np.median(a[lung]) <= -800
    assert -900 <= np.median(noisy.volume.array[lungs(noisy)]) <= -800
    ggo, cons, nod = a[m["ggo"]], a[m["consolidation"]], a[m["other_lesion"]]
    assert ggo.size and cons.size and nod.size
    assert ggo.min() >= -750 and ggo.max() <= -300
    assert cons.min() >= -100 and cons.max() <= 50
    assert nod.min() >= 20 and nod.max() <= 60
    assert np.all(a[~m["body"]] == -1000)  # air around the patient
    assert np.all(a[m["airway"]] == -1000)
    body = a[m["body"] & ~lung & ~m["airway"]]
    assert np.mean((body > -130) & (body < -70)) > 0.05  # fat
    assert np.mean((body > 20) & (body < 70)) > 0.3  # muscle, organs, heart, vessels
    assert np.mean(body > 600) > 0.002 and body.max() >= 800  # cortical bone (ribs, sternum, spine)
    # vessels in the lungs: soft-tissue density inside the lung masks, but only a few percent of them
    no_lesion = lung & ~m["ggo"] & ~m["consolidation"] & ~m["other_lesion"]
    assert 0.005 < np.mean(a[no_lesion] > -300) < 0.1
    # noise: flat air outside the body has the configured SD
    air = noisy.volume.array[~noisy.masks["body"]]
    assert 9 < air[air > -1024].std() < 15


def test_lesions_lie_inside_the_lungs_near_the_pleura(clean):
    m = clean.masks
    lung = lungs(clean)
    assert {les.kind for les in clean.lesions} == {"ggo", "consolidation", "nodule"}
    depth = ndimage.distance_transform_edt(lung, sampling=clean.volume.spacing)
    vml = np.prod(clean.volume.spacing) / 1000
    for les in clean.lesions:
        assert isinstance(les, Lesion)
        name = {"ggo": "ggo", "consolidation": "consolidation", "nodule": "other_lesion"}[les.kind]
        box = tuple(slice(*b) for b in les.bbox)
        own = m[name][box]
        assert own.any()
        side = m["lung_left" if les.side == "left" else "lung_right"]
        assert np.all(side[box][own]), les
        assert 0 < les.volume_ml <= own.sum() * vml + 1e-9  # the box may hold another lesion of that kind
        lo, hi = (clean.volume.index_to_lps([0, 0, i])[0] for i in les.bbox[2])
        assert lo <= les.center_lps[0] <= hi
        assert (les.center_lps[0] > 0) == (les.side == "left")
        if les.kind in ("ggo", "consolidation"):
            assert depth[box][own].min() <= 8.0, les  # subpleural: touches the lung surface
    for name in ("ggo", "consolidation", "other_lesion"):
        assert np.all(lung[m[name]]), name


def test_left_lung_is_on_the_patients_left(clean):
    vol = clean.volume
    x_col = vol.index_to_lps(np.array([[0, 0, i] for i in range(vol.shape[2])]))[:, 0]
    cols_left = np.nonzero(clean.masks["lung_left"])[2]
    cols_right = np.nonzero(clean.masks["lung_right"])[2]
    assert x_col[cols_left].min() > 0 > x_col[cols_right].max()
    assert cols_left.mean() > vol.shape[2] / 2 > cols_right.mean()  # patient right at small column indices
    assert clean.masks["lung_right"].sum() > clean.masks["lung_left"].sum()  # cardiac notch on the left
    # posterior at large row indices: most midline bone (the spine, not the sternum) is behind the lungs
    a = vol.array
    rows_lung = np.nonzero(lungs(clean))[1]
    bone_rows = np.nonzero(a[:, :, vol.shape[2] // 2] > 200)[1]
    assert np.mean(bone_rows > rows_lung.mean()) > 0.6
    # superior at large slice indices: the lungs' apices are above the liver dome
    liver_like = (a > 45) & (a < 70) & clean.masks["body"]
    assert np.nonzero(lungs(clean))[0].max() > np.nonzero(liver_like)[0].mean()


def test_masks_are_disjoint_where_they_should_be(clean):
    m = clean.masks
    assert not np.any(m["lung_left"] & m["lung_right"])
    assert m["airway"].any() and not np.any(m["airway"] & lungs(clean))
    lesion_names = ("ggo", "consolidation", "other_lesion")
    for i, a in enumerate(lesion_names):
        for b in lesion_names[i + 1:]:
            assert not np.any(m[a] & m[b]), (a, b)
    for name in MASK_NAMES:
        assert np.all(m["body"][m[name]]), name
    for name in ("lung_left", "lung_right"):  # each lung is one piece
        assert ndimage.label(m[name])[1] == 1


def test_label_map(clean):
    lab = clean.label_map()
    m = clean.masks
    assert lab.dtype == np.uint8 and lab.shape == clean.volume.shape
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4, 5}
    assert LABELS == {"lung_left": 1, "lung_right": 2, "ggo": 3, "consolidation": 4, "other_lesion": 5}
    for name, value in LABELS.items():
        assert np.array_equal(lab == value, m[name] & (lab == value)), name
    assert np.array_equal(lab > 0, lungs(clean))  # lesions are inside the lungs
    assert np.array_equal(lab == 3, m["ggo"])
    assert np.array_equal(lab == 1, m["lung_left"] & ~m["ggo"] & ~m["consolidation"] & ~m["other_lesion"])


def test_write_masks_nifti_round_trip(clean, tmp_path):
    paths = clean.write_masks_nifti(tmp_path / "masks")
    assert set(paths) == set(MASK_NAMES) | {"labels"}
    ref = clean.volume.to_sitk()
    for name, path in paths.items():
        assert path.name == f"{name}.nii.gz" and path.exists()
        img = sitk.ReadImage(str(path))
        assert img.GetSize() == ref.GetSize()
        assert np.allclose(img.GetSpacing(), ref.GetSpacing())
        assert np.allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        assert np.allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
        back = volume_from_sitk(img)
        assert back.same_grid(clean.volume)
        expected = clean.label_map() if name == "labels" else clean.masks[name]
        assert np.array_equal(back.array, expected.astype(np.uint8)), name


def test_no_lesions_requested_gives_no_lesion_voxels():
    ph = make_phantom(PhantomConfig(**SMALL, n_ggo=0, n_consolidation=0, n_nodules=0, seed=5))
    assert ph.lesions == []
    for name in ("ggo", "consolidation", "other_lesion"):
        assert not ph.masks[name].any()
    assert set(np.unique(ph.label_map())) == {0, 1, 2}


def test_anisotropic_spacing_keeps_the_physical_anatomy(clean):
    """Same seed, same field of view, other voxel size: the same patient, sampled differently."""
    other = make_phantom(PhantomConfig(shape=(96, 64, 64), spacing=(3.0, 5.4, 5.4), vessel_min_radius_mm=1.0,
                                       n_ggo=2, n_consolidation=2, n_nodules=2, noise_sd=0.0, seed=3))
    for name in ("lung_left", "lung_right", "airway", "body"):
        v1 = clean.masks[name].sum() * np.prod(clean.volume.spacing) / 1000
        v2 = other.masks[name].sum() * np.prod(other.volume.spacing) / 1000
        tol = 0.05 if name != "airway" else 0.25
        assert v1 == pytest.approx(v2, rel=tol), name
    assert [les.kind for les in clean.lesions] == [les.kind for les in other.lesions]
    for a, b in zip(clean.lesions, other.lesions):
        assert a.side == b.side
        assert np.linalg.norm(np.subtract(a.center_lps, b.center_lps)) < 8.0


def test_orientation_code_names_x_y_z_in_the_dicom_order(noisy, tmp_path):
    """A NIfTI saved in RAS+ (nibabel's convention) reads back as "RAS"; the canonical volume is "LPS"."""
    import SimpleITK as sitk

    from viewer.io.volumes import read_volume_file

    img = noisy.volume.to_sitk()
    img = sitk.DICOMOrient(img, "RAS")  # x toward the right, y anterior, z superior
    sitk.WriteImage(img, str(tmp_path / "ras.nii.gz"))
    assert read_volume_file(tmp_path / "ras.nii.gz").orientation_code() == "RAS"
