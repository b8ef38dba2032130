"""What the synthetic sample archive contains: patients, studies, series.

A spec is plain frozen data, so the same spec always yields the same UIDs
and pixels (seeding is idempotent). :data:`DEFAULT_SPEC` is what
``radcloud stack seed`` loads; :func:`retrieve_bench_spec` and
:func:`archive_bench_spec` build the larger archives the benchmarks need.
All names and identifiers are invented.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

SeriesKind = Literal["ct_axial", "ct_scout", "mr_axial"]


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """One series. Axial slices start at ``z_start`` and step inferiorly."""

    description: str
    kind: SeriesKind
    count: int
    rows: int = 512
    cols: int = 512
    pixel_spacing: float = 0.78125          # mm; 512 x 0.78125 = 400 mm field of view
    slice_thickness: float = 5.0
    spacing: float | None = None            # between slice centres; default = thickness
    z_start: float = 250.0
    kernel: str = "STANDARD"                # CT reconstruction kernel
    weighting: Literal["T1", "T2"] = "T1"   # MR contrast
    window: tuple[float, float] = (40.0, 400.0)   # centre, width
    noise: float = 10.0                     # HU (CT) or signal units (MR)

    @property
    def step(self) -> float:
        return self.spacing if self.spacing is not None else self.slice_thickness


@dataclasses.dataclass(frozen=True)
class StudySpec:
    modality: Literal["CT", "MR"]
    description: str
    date: str                               # YYYYMMDD
    time: str                               # HHMMSS
    accession: str
    body_part: str
    series: tuple[SeriesSpec, ...]


@dataclasses.dataclass(frozen=True)
class PatientSpec:
    name: str                               # DICOM PN, e.g. "DOE^JANE"
    patient_id: str                         # the MRN
    birth_date: str
    sex: Literal["F", "M", "O"]
    studies: tuple[StudySpec, ...]


Spec = tuple[PatientSpec, ...]


def _ct_scout(rows: int = 512) -> SeriesSpec:
    return SeriesSpec("SCOUT", "ct_scout", 1, rows, rows, 500.0 / rows, window=(-400.0, 1600.0), noise=0.0)


def _mr(weighting: Literal["T1", "T2"], count: int = 30) -> SeriesSpec:
    window = (500.0, 1000.0) if weighting == "T1" else (800.0, 1600.0)
    return SeriesSpec(f"AX {weighting} SE", "mr_axial", count, 256, 256, 0.9375, 5.0, 5.5,
                      z_start=80.0, weighting=weighting, window=window, noise=12.0)


# 3 patients, 4 studies, 8 series, 356 instances (266 of them 512x512 CT).
DEFAULT_SPEC: Spec = (
    PatientSpec("DOE^JANE", "RC100001", "19670412", "F", (
        StudySpec("CT", "CT CHEST ABDOMEN PELVIS W CONTRAST", "20250314", "093012", "RCA0000101", "CHEST", (
            _ct_scout(),
            SeriesSpec("AXIAL 5mm", "ct_axial", 100, slice_thickness=5.0, z_start=250.0),
            SeriesSpec("AXIAL BONE", "ct_axial", 100, slice_thickness=3.0, z_start=250.0,
                       kernel="BONE", window=(500.0, 2000.0), noise=25.0),
        )),
    )),
    PatientSpec("SMITH^JOHN", "RC100002", "19550902", "M", (
        StudySpec("MR", "MR BRAIN WO CONTRAST", "20250611", "141500", "RCA0000201", "HEAD", (
            _mr("T1"), _mr("T2"),
        )),
    )),
    PatientSpec("ROE^MARY", "RC100003", "19821130", "F", (
        StudySpec("CT", "CT CHEST WO CONTRAST", "20240902", "081045", "RCA0000301", "CHEST", (
            _ct_scout(),
            SeriesSpec("AXIAL 2.5mm LUNG", "ct_axial", 64, slice_thickness=2.5, z_start=220.0,
                       kernel="LUNG", window=(-600.0, 1500.0)),
        )),
        StudySpec("MR", "MR BRAIN FOLLOW-UP", "20250120", "160230", "RCA0000302", "HEAD", (
            _mr("T2"),
        )),
    )),
)


def retrieve_bench_spec(n_series: int = 5, slices_per_series: int = 100) -> Spec:
    """One CT study of ``n_series`` x ``slices_per_series`` 512x512 slices (default 500)."""
    series = tuple(
        SeriesSpec(f"AXIAL {thickness}mm", "ct_axial", slices_per_series,
                   slice_thickness=thickness, z_start=250.0,
                   kernel=("STANDARD", "BONE", "LUNG")[i % 3])
        for i, thickness in enumerate(1.0 + 0.5 * k for k in range(n_series))
    )
    return (PatientSpec("BENCH^RETRIEVE", "RCB000001", "19700101", "O", (
        StudySpec("CT", "CT BENCH RETRIEVE", "20250101", "120000", "RCBR000001", "CHEST", series),
    )),)


_FIRST = ("JANE", "JOHN", "MARY", "ALEX", "SAM", "NOOR", "LI", "AMIR", "EVA", "OMAR", "ZOE", "IVAN")
_LAST = ("DOE", "SMITH", "ROE", "GARCIA", "KIM", "NGUYEN", "MULLER", "ROSSI", "SILVA", "COHEN",
         "OKAFOR", "TANAKA", "DUBOIS", "NOVAK", "BERG")
_DESCRIPTIONS = {
    "CT": (("CT CHEST WO CONTRAST", "CHEST"), ("CT ABDOMEN PELVIS", "ABDOMEN"), ("CT HEAD", "HEAD")),
    "MR": (("MR BRAIN WO CONTRAST", "HEAD"), ("MR KNEE LEFT", "KNEE"), ("MR LUMBAR SPINE", "LSPINE")),
}


def archive_bench_spec(n_studies: int = 1000, *, series_per_study: int = 1,
                       instances_per_series: int = 1, matrix: int = 64,
                       studies_per_patient: int = 2) -> Spec:
    """Many small studies for query benchmarks (cheap ``matrix``-square images).

    Studies spread over 2015-2025, alternate CT/MR and vary descriptions,
    so date-range, modality and description queries select subsets.
    """
    patients = []
    n_patients = -(-n_studies // studies_per_patient)
    study_no = 0
    for p in range(n_patients):
        studies = []
        for _ in range(min(studies_per_patient, n_studies - study_no)):
            modality = "CT" if study_no % 2 == 0 else "MR"
            description, body_part = _DESCRIPTIONS[modality][(study_no // 2) % 3]
            kind = "ct_axial" if modality == "CT" else "mr_axial"
            series = tuple(
                SeriesSpec(f"{'AXIAL' if modality == 'CT' else 'AX T2'} {k + 1}", kind,
                           instances_per_series, matrix, matrix,
                           (400.0 if modality == "CT" else 240.0) / matrix, 5.0,
                           z_start=80.0, weighting="T2", noise=0.0)
                for k in range(series_per_study)
            )
            year, day = 2015 + study_no % 11, study_no % 365
            date = f"{year}{1 + day // 31 % 12:02d}{1 + day % 28:02d}"
            time = f"{8 + study_no % 10:02d}{study_no % 60:02d}00"
            studies.append(StudySpec(modality, description, date, time,
                                     f"RCQ{study_no:07d}", body_part, series))
            study_no += 1
        name = f"{_LAST[p % len(_LAST)]}^{_FIRST[(p // len(_LAST)) % len(_FIRST)]}^{p:05d}"
        birth = f"{1930 + p % 70}{1 + p % 12:02d}{1 + p % 28:02d}"
        patients.append(PatientSpec(name, f"RCQ{p:06d}", birth, "FM"[p % 2], tuple(studies)))
    return tuple(patients)
