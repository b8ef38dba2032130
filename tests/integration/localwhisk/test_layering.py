"""localwhisk is a general tool: importing it (and its server) pulls in nothing of radcloud and no DICOM library."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

CHECK = """
import sys
import localwhisk, localwhisk.api, localwhisk.server, localwhisk.cli, localwhisk.manifest, localwhisk.testing
import localwhisk.runtime
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('radcloud', 'pydicom', 'pynetdicom', 'pylibjpeg'))
print(','.join(bad))
"""


def test_localwhisk_imports_no_radcloud_or_dicom():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", f"localwhisk imported: {out.stdout}"
