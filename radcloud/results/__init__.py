"""What a job gives back: the results manifest, DICOM SEG/SR and derived series, the viewer's data."""
