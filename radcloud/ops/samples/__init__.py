"""Sample studies for the local stack, the tests and the benchmarks.

- :mod:`~radcloud.ops.samples.phantom`: anatomy-like CT/MR numeric phantoms (numpy).
- :mod:`~radcloud.ops.samples.spec`: which patients, studies and series exist.
- :mod:`~radcloud.ops.samples.synthetic`: those specs as pydicom datasets, plus
  pydicom's bundled real test files.
- :mod:`~radcloud.ops.samples.seed`: upload them to Orthanc (``radcloud stack seed``).

Nothing is imported here: the CLI loads the heavy modules on demand.
"""
