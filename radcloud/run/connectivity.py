"""Connectivity structures for labelling CT volumes, without importing scipy.

``ndimage.generate_binary_structure(ndim, 1)`` gives the same arrays, but the
volume plugins (``lung-seg``, ``segment-stats``) start for every series of a
study, most of which are not CT, and importing scipy is a third or more of
their start-up CPU time: they build these at import and import
``scipy.ndimage`` only when a volume is labelled.
"""

from __future__ import annotations

import numpy as np


def cross(ndim: int) -> np.ndarray:
    """The centre and its face neighbours: ``generate_binary_structure(ndim, 1)``."""
    out = np.zeros((3,) * ndim, bool)
    for axis in range(ndim):
        index = [1] * ndim
        index[axis] = slice(None)
        out[tuple(index)] = True
    return out


FACES = cross(3)
"""6-connected in 3-D: half the cost of 26-connected labelling."""

IN_PLANE = np.zeros((3, 3, 3), bool)
IN_PLANE[1] = cross(2)
"""4-connected within a slice only (labelling a volume slice by slice)."""
