"""Fault fixture: a ds plugin that misbehaves (``--mode``) only on a 2-instance series.

Every other series gets one small output, so siblings of the bad shard finish.
crash: exit 3. hang: sleep past the 6 s limit. hog: allocate past the 200 MiB
limit. flood: write past the 4 MiB output limit. files: write past 200 files.
escape: leave symlinks out of the output dir (to /etc/passwd and to ..).
"""
import argparse
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--mode", default="crash")
p.add_argument("inputdir")
p.add_argument("outputdir")
a = p.parse_args()
files = [f for _root, _dirs, names in os.walk(a.inputdir) for f in names]
if len(files) == 2:
    print(f"misbehave: {a.mode} on a 2-instance series", file=sys.stderr, flush=True)
    if a.mode == "crash":
        sys.exit(3)
    if a.mode == "hang":
        time.sleep(120)
    if a.mode == "hog":
        hog = [bytearray(16 * 1024**2) for _ in range(200)]  # 3.2 GB, far past the limit
    if a.mode == "flood":
        with open(os.path.join(a.outputdir, "flood.bin"), "wb") as fh:
            for _ in range(256):
                fh.write(b"\0" * 1024**2)
    if a.mode == "files":
        for i in range(5000):
            open(os.path.join(a.outputdir, f"f{i}.txt"), "w").close()
    if a.mode == "escape":
        os.symlink("/etc/passwd", os.path.join(a.outputdir, "passwd.txt"))
        os.symlink("..", os.path.join(a.outputdir, "up"))
        os.symlink("/etc", os.path.join(a.outputdir, "etc"))
    sys.exit(0)
with open(os.path.join(a.outputdir, "count.txt"), "w") as fh:
    fh.write(str(len(files)))
