"""Realistic synthetic DICOM studies built with pydicom, plus pydicom's real files.

Turns a :mod:`radcloud.ops.samples.spec` into CT Image Storage and MR Image
Storage instances with the attributes a PACS, a viewer and dcm2niix rely on:
deterministic UIDs (``generate_uid(entropy_srcs=...)``, 64 characters), dates,
accession numbers, descriptions, consistent patient geometry, rescale and
window values, Explicit VR Little Endian file meta.

Generation streams: :func:`plan` lists series with their UIDs and instance
counts without touching pixels, and each :class:`SeriesPlan` builds its
datasets one at a time.

    for ds in generate_studies():          # DEFAULT_SPEC, 356 instances
        ...
    write_studies("/tmp/samples")          # the same, as .dcm files
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, UID,
                         generate_uid)

from radcloud.ops.samples import phantom
from radcloud.ops.samples.spec import (DEFAULT_SPEC, PatientSpec, SeriesSpec, Spec, StudySpec,
                                   archive_bench_spec, retrieve_bench_spec)

# Namespaces the UID entropy so radcloud's samples never collide with other
# users of pydicom's root. Changing it changes every UID: don't.
UID_NAMESPACE = "radcloud-samples-v1"
IMPLEMENTATION_VERSION = "RADCLOUD_SAMPLES"
IMPLEMENTATION_UID = generate_uid(entropy_srcs=[UID_NAMESPACE, "implementation"])
CT_INTERCEPT = -1024.0

__all__ = [
    "DEFAULT_SPEC", "SeriesPlan", "archive_bench_spec", "dataset_bytes", "generate_many_studies",
    "generate_studies", "plan", "pydicom_test_files", "retrieve_bench_spec", "sample_uid",
    "write_studies",
]


def sample_uid(*parts: object) -> UID:
    """A deterministic, valid, 64-character UID for the given key parts."""
    return generate_uid(entropy_srcs=[UID_NAMESPACE, *map(str, parts)])


@dataclasses.dataclass(frozen=True)
class SeriesPlan:
    """One series of the archive, UIDs fixed, pixels not yet generated."""

    patient: PatientSpec
    study: StudySpec
    series: SeriesSpec
    series_number: int
    study_uid: UID
    series_uid: UID
    frame_uid: UID

    @property
    def count(self) -> int:
        return self.series.count

    def sop_uid(self, instance_number: int) -> UID:
        return sample_uid(self.patient.patient_id, self.study.accession, self.series_number,
                          instance_number)

    def instance(self, number: int) -> Dataset:
        """Build instance ``number`` (1-based), pixels included."""
        if not 1 <= number <= self.series.count:
            raise IndexError(f"instance {number} is outside 1..{self.series.count}")
        return _instance(self, number)

    def datasets(self, numbers: Iterable[int] | None = None) -> Iterator[Dataset]:
        """Build the series' instances (all, or the given 1-based ``numbers``) one at a time."""
        template = _series_template(self)
        for number in range(1, self.series.count + 1) if numbers is None else numbers:
            yield _instance(self, number, template)


def plan(spec: Spec | None = None) -> list[SeriesPlan]:
    """Every series of ``spec`` (default :data:`DEFAULT_SPEC`), in upload order."""
    plans = []
    for patient in DEFAULT_SPEC if spec is None else spec:
        for study in patient.studies:
            study_uid = sample_uid(patient.patient_id, study.accession)
            frame_uid = sample_uid(patient.patient_id, study.accession, "frame")
            for number, series in enumerate(study.series, start=1):
                plans.append(SeriesPlan(patient, study, series, number, study_uid,
                                        sample_uid(patient.patient_id, study.accession, number),
                                        frame_uid))
    return plans


def generate_studies(spec: Spec | None = None) -> Iterator[Dataset]:
    """Yield every instance of ``spec`` (default :data:`DEFAULT_SPEC`) as a Dataset."""
    for series_plan in plan(spec):
        yield from series_plan.datasets()


def generate_many_studies(n_studies: int = 1000, instances_per_series: int = 1,
                          series_per_study: int = 1, matrix: int = 64) -> Iterator[Dataset]:
    """A large archive of small studies, for query benchmarks (see :func:`archive_bench_spec`)."""
    return generate_studies(archive_bench_spec(n_studies, series_per_study=series_per_study,
                                               instances_per_series=instances_per_series,
                                               matrix=matrix))


def dataset_bytes(ds: Dataset) -> bytes:
    """Serialise a dataset as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_studies(directory: str | Path, spec: Spec | None = None) -> list[Path]:
    """Write ``spec`` under ``directory/<MRN>/<accession>/<series number>/`` as .dcm files.

    Returns the written paths, in generation order.
    """
    root = Path(directory)
    paths = []
    for series_plan in plan(spec):
        folder = root / series_plan.patient.patient_id / series_plan.study.accession / (
            f"{series_plan.series_number:03d}")
        folder.mkdir(parents=True, exist_ok=True)
        for ds in series_plan.datasets():
            path = folder / f"IM{int(ds.InstanceNumber):05d}.dcm"
            path.write_bytes(dataset_bytes(ds))
            paths.append(path)
    return paths


# Real files shipped inside pydicom that Orthanc stores, one per distinct
# SOP Instance UID (the MR_small* variants share one UID, so only one of
# them is listed), covering the transfer syntaxes radcloud must survive.
# Never use pydicom's get_testdata_file() for anything else: for files it
# does not ship it downloads from the internet.
PYDICOM_TEST_FILES = (
    "CT_small.dcm",                    # CT, Explicit VR Little Endian
    "MR_small_jpeg_ls_lossless.dcm",   # MR, JPEG-LS lossless
    "693_J2KI.dcm",                    # CT, JPEG 2000
    "J2K_pixelrep_mismatch.dcm",       # CT, JPEG 2000 lossless
    "JPEG2000.dcm",                    # NM, JPEG 2000
    "JPEG-lossy.dcm",                  # NM, JPEG extended
    "examples_jpeg2k.dcm",             # US, JPEG 2000 lossless
    "SC_rgb_rle.dcm",                  # SC RGB, RLE lossless
    "SC_rgb_jpeg_dcmtk.dcm",           # SC RGB, JPEG baseline
    "examples_ybr_color.dcm",          # US multi-frame, JPEG baseline YBR
)


def pydicom_test_files() -> list[Path]:
    """Paths of :data:`PYDICOM_TEST_FILES` present in the installed pydicom."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    return [folder / name for name in PYDICOM_TEST_FILES if (folder / name).is_file()]


def _ds(value: float) -> str:
    """A DS string (at most 16 characters) without float noise."""
    text = f"{value:.10g}"
    return "0" if text == "-0" else text


def _instance(p: SeriesPlan, number: int, template: Dataset | None = None) -> Dataset:
    """Instance ``number``: the series template plus per-instance UIDs, position, pixels."""
    template = _series_template(p) if template is None else template
    # A new element dict sharing the template's elements: building ~60
    # elements per instance would cost more than the pixels of a small image.
    # Assigning an attribute replaces an element, so instances stay independent.
    ds = Dataset(dict(template.items()))
    sop_uid = p.sop_uid(number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = template.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    ds.add_new(0x7FE00010, "OW", _pixels(ds, p, number).tobytes())   # PixelData
    return ds


def _series_template(p: SeriesPlan) -> Dataset:
    """Every attribute shared by the instances of a series."""
    s, study, patient = p.series, p.study, p.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage if study.modality == "CT" else MRImageStorage
    ds.PatientName, ds.PatientID = patient.name, patient.patient_id
    ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
    ds.StudyInstanceUID, ds.SeriesInstanceUID = p.study_uid, p.series_uid
    ds.FrameOfReferenceUID = p.frame_uid
    ds.PositionReferenceIndicator = ""  # Type 2 of the Frame of Reference module: present, unknown
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _later(study.time, p.series_number * 60)
    ds.AccessionNumber, ds.StudyID = study.accession, study.accession[-4:]
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.InstitutionName = "Radcloud Synthetic Hospital"
    ds.Manufacturer, ds.ManufacturerModelName = "radcloud", "phantom"
    ds.StudyDescription, ds.SeriesDescription = study.description, s.description
    ds.Modality, ds.BodyPartExamined = study.modality, study.body_part
    ds.PatientPosition = "HFS"
    ds.SeriesNumber, ds.AcquisitionNumber = p.series_number, 1
    ds.PixelSpacing = [_ds(s.pixel_spacing), _ds(s.pixel_spacing)]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = s.rows, s.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = _ds(s.window[0]), _ds(s.window[1])
    if s.kind == "ct_scout":
        # Coronal localiser: columns along +x, rows down the patient (-z).
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceThickness, ds.SpacingBetweenSlices = _ds(s.slice_thickness), _ds(s.step)
    if s.kind == "mr_axial":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.MagneticFieldStrength = "2D", "1.5"
        ds.RepetitionTime, ds.EchoTime = ("500", "15") if s.weighting == "T1" else ("4000", "100")
        ds.EchoTrainLength = 1  # Type 2 of the MR Image module: spin echo, one echo
    else:
        ds.KVP, ds.ConvolutionKernel = "120", s.kernel
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(CT_INTERCEPT), "1", "HU"
    return ds


def _pixels(ds: Dataset, p: SeriesPlan, number: int) -> np.ndarray:
    """Set the instance's position and return its stored pixel values (uint16)."""
    s = p.series
    seed = _noise_seed(p.series_uid, number)
    if s.kind == "ct_scout":
        ds.ImagePositionPatient = [_ds(-(s.cols - 1) / 2 * s.pixel_spacing), "0",
                                   _ds(s.z_start - s.pixel_spacing / 2)]
        values = phantom.ct_projection(s.rows, s.cols, fov_mm=s.pixel_spacing * s.rows, z_top=s.z_start)
    else:
        # Head first: instance 1 is the most superior slice.
        z = s.z_start - (number - 1) * s.step
        ds.ImagePositionPatient = [_ds(-(s.cols - 1) / 2 * s.pixel_spacing),
                                   _ds(-(s.rows - 1) / 2 * s.pixel_spacing), _ds(z)]
        ds.SliceLocation = _ds(z)
        if s.kind == "mr_axial":
            values = phantom.mr_slice(z, s.rows, s.cols, s.pixel_spacing, s.weighting,
                                      noise=s.noise, seed=seed)
            return np.clip(np.rint(values), 0, 4095).astype(np.uint16)
        values = phantom.ct_slice(z, s.rows, s.cols, s.pixel_spacing, noise_hu=s.noise, seed=seed)
    # CT stored value = HU + 1024, in 12 unsigned bits (-1024..3071 HU).
    return np.clip(np.rint(values) - CT_INTERCEPT, 0, 4095).astype(np.uint16)


def _noise_seed(uid: str, number: int) -> int:
    """A stable noise seed per instance (Python's hash() is salted per process)."""
    return (int(uid.rsplit(".", 1)[-1][-12:]) * 1009 + number) % (2**32)


def _later(hhmmss: str, seconds: int) -> str:
    total = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + seconds
    total %= 86400
    return f"{total // 3600:02d}{total % 3600 // 60:02d}{total % 60:02d}"
