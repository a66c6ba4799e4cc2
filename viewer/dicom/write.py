"""Write a Volume as a DICOM CT image series (single-frame CT Image Storage).

Used by the phantom generator and the demo study, and by tests that build edge
cases (they take the datasets from `volume_to_datasets`, change them, and save).
"""

from __future__ import annotations

import copy
import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from viewer.core.volume import Volume

#: syntaxes written by setting TransferSyntaxUID alone (big endian needs byte-swapped PixelData from the caller)
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}


def derive_uid(seed: str | None, *parts: object) -> UID:
    """A UID derived from `seed` and `parts` (random when seed is None)."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[seed, *map(str, parts)])


def volume_to_datasets(
    volume: Volume,
    *,
    uid_seed: str | None = None,
    series_description: str | None = None,
    series_number: int = 1,
    study_date: str | None = None,
) -> list[Dataset]:
    """One CT Image Storage dataset per slice of `volume` (HU rounded to integers).

    Args:
        volume: the image; its direction columns give IOP and its affine the IPP of each slice.
        uid_seed: makes every UID deterministic (same seed, same UIDs); random when None.
        series_description: defaults to the volume's metadata.
        series_number: SeriesNumber.
        study_date: DICOM date (YYYYMMDD); defaults to the metadata or today.
    """
    md = volume.metadata
    hu = np.rint(np.asarray(volume.array, dtype=np.float64))
    lo, hi = float(hu.min()), float(hu.max())
    if lo >= -1024 and hi <= 3071:
        stored = (hu + 1024).astype(np.uint16)
        intercept, bits_stored, signed = -1024.0, 12, 0
    elif lo >= -32768 and hi <= 32767:
        stored = hu.astype(np.int16)
        intercept, bits_stored, signed = 0.0, 16, 1
    else:
        raise ValueError(f"HU range {lo}..{hi} does not fit 16-bit DICOM pixels")

    study_uid = md.study_instance_uid or derive_uid(uid_seed, "study")
    series_uid = md.series_instance_uid or derive_uid(uid_seed, "series", series_number)
    frame_uid = md.frame_of_reference_uid or derive_uid(uid_seed, "frame")
    date = study_date or md.study_date or _dt.date.today().strftime("%Y%m%d")
    row_dir = volume.direction[:, 2]
    col_dir = volume.direction[:, 1]
    iop = [float(f"{v:.6f}") for v in (*row_dir, *col_dir)]
    dz, dy, dx = volume.spacing
    datasets = []
    for k in range(volume.shape[0]):
        ds = Dataset()
        sop_uid = derive_uid(uid_seed, "sop", series_number, k) if uid_seed is not None else generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = date
        ds.SeriesDate = date
        ds.StudyTime = md.study_time or "120000"
        ds.AccessionNumber = md.accession_number
        ds.Modality = "CT"
        ds.Manufacturer = md.manufacturer or "LungLens"
        ds.ManufacturerModelName = md.manufacturer_model or "phantom"
        ds.StudyDescription = md.study_description or "Chest CT"
        ds.SeriesDescription = series_description if series_description is not None else md.series_description
        ds.PatientName = md.patient_name
        ds.PatientID = md.patient_id
        ds.PatientBirthDate = md.patient_birth_date
        ds.PatientSex = md.patient_sex
        ds.BodyPartExamined = md.body_part or "CHEST"
        ds.SliceThickness = f"{dz:.6g}"
        ds.SpacingBetweenSlices = f"{dz:.6g}"
        ds.KVP = md.kvp or "120"
        ds.ConvolutionKernel = md.convolution_kernel or "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ipp = volume.index_to_lps((k, 0, 0))
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in ipp]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(np.dot(ipp, np.cross(row_dir, col_dir))):.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = signed
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        datasets.append(ds)
    return datasets


def save_datasets(
    datasets: Sequence[Dataset],
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """Save datasets as DICOM files (compressing them if `transfer_syntax` asks for it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        name = names[i] if names is not None else f"IM{i + 1:05d}.dcm"
        if transfer_syntax not in _UNCOMPRESSED:
            ds = _copy(ds)
            ds.compress(transfer_syntax)
        else:
            ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        path = out / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _copy(ds: Dataset) -> Dataset:
    return copy.deepcopy(ds)


def write_ct_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    uid_seed: str | None = None,
    series_description: str | None = None,
    series_number: int = 1,
) -> list[Path]:
    """Write `volume` as a CT series into `out_dir`, one file per slice."""
    datasets = volume_to_datasets(
        volume, uid_seed=uid_seed, series_description=series_description, series_number=series_number
    )
    return save_datasets(datasets, out_dir, transfer_syntax=transfer_syntax)
