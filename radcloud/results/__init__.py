"""What a job gives back: DICOM SEG/SR and derived series, the viewer's data.

The results manifest reads the job record (final states, TTL), so it lives
with the jobs: :mod:`radcloud.work.jobresults`.
"""
