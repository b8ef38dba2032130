"""The archive: Orthanc's REST API, DICOM query and search.

A retrieve (Orthanc -> object store, with progress) reads the archive but is
tracked work: :mod:`radcloud.work.retrieve`.
"""
