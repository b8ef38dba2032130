#!/usr/bin/env python3
"""ct-resample: a CT series resampled to isotropic voxels, smoothed, with a body mask (SimpleITK).

ChRIS ds plugin: ``ct_resample.py [--spacing MM] [--sigma MM] [--bodyHU HU] inputdir outputdir``.
Per CT series under ``inputdir``, the whole volume at once (this is what
needs more than an action: a 300-slice 512² series takes about 2 GB):

1. the slices, sorted along the slice normal, in HU (rescale applied);
2. Gaussian smoothing with ``sigma`` mm (SimpleITK's recursive Gaussian:
   anti-aliasing before going to coarser voxels, noise reduction);
3. linear resampling onto an isotropic grid of ``spacing`` mm covering the
   same physical extent, same orientation;
4. a body mask: HU > ``bodyHU``, the largest connected component, holes
   filled slice by slice.

Outputs: ``nifti/series-NNN.nii.gz`` (the resampled HU volume, int16),
``nifti/series-NNN-body.nii.gz`` (the mask, uint8), ``dicom/series-NNN/*.dcm``
(the resampled volume as a new derived CT series in the source study: same
patient and study, new series and instance UIDs derived from the source
series, so a rerun replaces rather than duplicates) and ``ct-resample.json``
(sizes, spacings, body volume in mL, seconds per step). Files and series it
cannot use are listed there with a reason; exit 0 whenever the inputs were
read. Logs carry sizes and timings, never patient attributes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from scipy import ndimage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from radcloud.pacs import derivedseries
from radcloud.run import ctslices

VERSION = "1.0.0"
# Patient, study and equipment attributes the derived series keeps from its source.
CARRIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientIdentityRemoved",
           "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
           "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
           "PositionReferenceIndicator", "BodyPartExamined", "PatientPosition", "KVP")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CT resampled to isotropic voxels, smoothed, with a body mask")
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size of the output (mm)")
    p.add_argument("--sigma", type=float, default=1.0, help="Gaussian smoothing before resampling (mm; 0 = none)")
    p.add_argument("--bodyHU", type=float, default=-500.0, help="HU above which a voxel may belong to the body")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def file_reason(ds: Dataset) -> str | None:
    return ctslices.slice_reason(ds, "ct-resample works on CT only")


def volume(inputdir: Path, items: ctslices.Slices, normal: np.ndarray) -> sitk.Image:
    """The series as a float32 SimpleITK image in HU with its physical geometry."""
    first = items[0][1]
    rows, cols = int(first.Rows), int(first.Columns)
    hu = np.empty((len(items), rows, cols), np.float32)
    for k, (rel, _ds) in enumerate(items):
        ds = pydicom.dcmread(inputdir / rel)
        hu[k] = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) \
            + float(ds.get("RescaleIntercept", 0) or 0)
        del ds
    positions = [float(np.dot(normal, np.array(ds.ImagePositionPatient, float))) for _, ds in items]
    dz = float(np.median(np.diff(positions))) if len(positions) > 1 else \
        float(first.get("SliceThickness") or 1.0)
    dy, dx = (float(v) for v in first.PixelSpacing)
    image = sitk.GetImageFromArray(hu)  # (z, y, x) -> x, y, z
    del hu
    iop = [float(v) for v in first.ImageOrientationPatient]
    image.SetSpacing((dx, dy, dz))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    image.SetDirection((iop[0], iop[3], normal[0], iop[1], iop[4], normal[1], iop[2], iop[5], normal[2]))
    return image


def resample(image: sitk.Image, spacing: float, sigma: float) -> sitk.Image:
    if sigma > 0 and min(image.GetSize()) >= 4:
        image = sitk.SmoothingRecursiveGaussian(image, sigma)
    elif sigma > 0:  # a thin stack: the recursive filter needs 4 voxels a side; smooth in-plane only
        image = sitk.DiscreteGaussian(image, [sigma ** 2 if n >= 4 else 0.0 for n in image.GetSize()],
                                      32, 0.01, True)
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         (spacing, spacing, spacing), image.GetDirection(), -1024.0, sitk.sitkFloat32)


def body_mask(image: sitk.Image, body_hu: float) -> sitk.Image:
    mask = sitk.BinaryThreshold(image, lowerThreshold=body_hu, upperThreshold=1e9, insideValue=1, outsideValue=0)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.BinaryThreshold(components, 1, 1, 1, 0)
    # Holes (lungs, bowel gas) filled slice by slice: in-plane connectivity only.
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    filled = ndimage.binary_fill_holes(sitk.GetArrayViewFromImage(largest).astype(bool), structure=in_plane)
    out = sitk.GetImageFromArray(filled.astype(np.uint8))
    out.CopyInformation(image)
    return out


def write_dicom(image: sitk.Image, source: Dataset, outdir: Path) -> int:
    """The resampled volume as a derived CT series (int16 HU + 0, one file per slice), numbered,
    described and with UIDs as :mod:`radcloud.pacs.derivedseries` rules (series 3 resampled is 304)."""
    outdir.mkdir(parents=True, exist_ok=True)
    src_series = str(source.SeriesInstanceUID)
    series_uid = derivedseries.uid(src_series, "ct-resample", VERSION, "series")
    series_number = derivedseries.series_number(source.get("SeriesNumber"), "images")
    arr = sitk.GetArrayViewFromImage(image)
    spacing = image.GetSpacing()
    d = image.GetDirection()
    row, col, normal = (d[0], d[3], d[6]), (d[1], d[4], d[7]), (d[2], d[5], d[8])
    for k in range(arr.shape[0]):
        ds = Dataset()
        for kw in CARRIED:
            if kw in source:
                setattr(ds, kw, source.data_element(kw).value)
        uid = derivedseries.uid(src_series, "ct-resample", VERSION, str(k))
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "CT", series_uid, series_number, k + 1
        ds.SeriesDescription = derivedseries.description("ct-resample", "images", source.get("SeriesNumber"),
                                                   f"{spacing[0]:g} mm iso")
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = derivedseries.MANUFACTURER, "ct-resample", VERSION
        ds.DerivationDescription = "Gaussian-smoothed and resampled to isotropic voxels (SimpleITK)"
        derivedseries.date_stamp(ds)
        ds.AcquisitionNumber = None
        if "PositionReferenceIndicator" not in ds:
            ds.PositionReferenceIndicator = None
        if "FrameOfReferenceUID" not in ds:
            ds.FrameOfReferenceUID = derivedseries.uid(src_series, "ct-resample", "", "frame")
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.SliceLocation = f"{float(np.dot(normal, origin)):.4f}"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.clip(np.rint(arr[k]), -32768, 32767).astype(np.int16).tobytes()
        ds.save_as(outdir / f"IM-{k + 1:05d}.dcm", enforce_file_format=True)
    return int(arr.shape[0])


def run(inputdir: Path, outputdir: Path, *, spacing: float = 1.0, sigma: float = 1.0, body_hu: float = -500.0) -> dict:
    skipped: list[dict] = []
    result: dict = {"plugin": "ct-resample", "version": VERSION, "spacing_mm": spacing, "sigma_mm": sigma,
                    "series": [], "skipped": skipped, "skipped_series": []}
    found = ctslices.scan(inputdir, skipped, file_reason)
    number = 0
    for _uid, items in sorted(found.items(), key=lambda kv: int(kv[1][0][1].get("SeriesNumber", 0) or 0)):
        number += 1
        times: dict[str, float] = {}
        t = time.perf_counter()
        slices, normal = ctslices.ordered(items, skipped)
        if len(slices) < 2:
            result["skipped_series"].append({"series": number, "reason": "fewer than 2 usable CT slices"})
            continue
        image = volume(inputdir, slices, normal)
        times["read_s"] = time.perf_counter() - t
        t = time.perf_counter()
        iso = resample(image, spacing, sigma)
        times["resample_s"] = time.perf_counter() - t
        t = time.perf_counter()
        mask = body_mask(iso, body_hu)
        times["mask_s"] = time.perf_counter() - t
        t = time.perf_counter()
        (outputdir / "nifti").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.Cast(sitk.Round(sitk.Clamp(iso, sitk.sitkFloat32, -32768, 32767)), sitk.sitkInt16),
                        str(outputdir / "nifti" / f"series-{number:03d}.nii.gz"), useCompression=True)
        sitk.WriteImage(mask, str(outputdir / "nifti" / f"series-{number:03d}-body.nii.gz"), useCompression=True)
        n_dicom = write_dicom(iso, slices[0][1], outputdir / "dicom" / f"series-{number:03d}")
        times["write_s"] = time.perf_counter() - t
        body_voxels = int(sitk.GetArrayViewFromImage(mask).sum())
        result["series"].append({
            "series": number, "slices_in": len(slices), "size_in": list(image.GetSize()),
            "spacing_in_mm": [round(v, 4) for v in image.GetSpacing()], "size_out": list(iso.GetSize()),
            "dicom_slices_out": n_dicom, "body_ml": round(body_voxels * spacing ** 3 / 1000.0, 1),
            "seconds": {k: round(v, 2) for k, v in times.items()}})
        print(f"series {number}: {len(slices)} slices {image.GetSize()} -> {iso.GetSize()} at {spacing:g} mm; "
              f"body {result['series'][-1]['body_ml']} mL; {sum(times.values()):.1f} s", flush=True)
        del image, iso, mask
    if not result["series"]:
        print("no usable CT series in the inputs (see ct-resample.json)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.spacing <= 0 or args.sigma < 0:
        print("error: --spacing must be > 0 and --sigma >= 0", file=sys.stderr)
        return 2
    inputdir, outputdir = Path(args.inputdir), Path(args.outputdir)
    outputdir.mkdir(parents=True, exist_ok=True)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, len(__import__("os").sched_getaffinity(0))))
    result = run(inputdir, outputdir, spacing=args.spacing, sigma=args.sigma, body_hu=args.bodyHU)
    (outputdir / "ct-resample.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
