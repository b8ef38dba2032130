"""Sample studies for the local stack, the tests and the benchmarks.

- :mod:`~radcloud.samples.phantom`: anatomy-like CT/MR numeric phantoms (numpy).
- :mod:`~radcloud.samples.spec`: which patients, studies and series exist.
- :mod:`~radcloud.samples.synthetic`: those specs as pydicom datasets, plus
  pydicom's bundled real test files.
- :mod:`~radcloud.samples.seed`: upload them to Orthanc (``radcloud stack seed``).

Nothing is imported here: the CLI loads the heavy modules on demand.
"""
