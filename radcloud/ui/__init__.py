"""The clinician web UI: rendering and building the pages."""
