"""Orthanc's own viewer: OHIF v3, served by the stack's Orthanc at /ohif/ (#19, "in Orthanc").

Here: the stack's Orthanc (started by radcloud's stack code, with the OHIF build `make install` made
in deploy/ohif/build) serves OHIF behind its own login, configured for its own DICOMweb. What OHIF
shows of radcloud's results is tested on the real walk's: test_zero_click.py runs ohif.e2e.mjs on the
real chest CT's study once lung-seg has pushed its SEG and SR there (one OHIF run on real results
instead of a second one on a synthetic box: the OHIF run is ~80 s of the tier).
"""

from __future__ import annotations

import requests


def test_orthanc_serves_ohif_behind_its_own_login_against_its_own_dicomweb(stack):
    base = stack.orthanc_url.rstrip("/")
    assert requests.get(f"{base}/ohif/viewer", timeout=10).status_code == 401   # Orthanc's login, as for its API
    page = requests.get(f"{base}/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"}, auth=stack.orthanc_auth, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'window.PUBLIC_URL="/ohif/"' in page.text and 'src="/ohif/app.bundle.' in page.text
    config = requests.get(f"{base}/ohif/app-config.js", auth=stack.orthanc_auth, timeout=10).text
    assert "wadoRoot: '/dicom-web'" in config and "routerBasename: '/ohif'" in config   # same origin
    assert stack.orthanc_auth[1] not in config
