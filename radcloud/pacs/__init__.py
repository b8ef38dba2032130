"""The archive: Orthanc's REST API, DICOM query and search, retrieve into the object store."""
