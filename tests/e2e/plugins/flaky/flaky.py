"""e2e fixture: a ds plugin that crashes (exit 3) when its input dir holds exactly 2 files.

So a study with series of 3, 3 and 2 instances gives a ``partial`` job.
"""
import os
import sys

inputdir, outputdir = sys.argv[-2], sys.argv[-1]
files = [f for _root, _dirs, names in os.walk(inputdir) for f in names]
if len(files) == 2:
    print("flaky: refusing a 2-instance series", file=sys.stderr)
    sys.exit(3)
with open(os.path.join(outputdir, "count.txt"), "w") as fh:
    fh.write(str(len(files)))
