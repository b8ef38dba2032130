"""What radcloud adds to the OpenWhisk Python base image: the installed bytes of a requirement's tree.

Sizes come from each installed distribution's RECORD (the files pip put in
site-packages, byte counts as installed), for the pinned versions in this
venv (make install: every extra is installed), plus radcloud's own package
files under ROOT (minus --exclude folders). docs/architecture.md, "What an
image installs", has the figures. Usage::

    python bench/image_size.py . radcloud 'radcloud[ct-resample]' --exclude radcloud/ops
    # before issue 17 (one dependency list): a tree of that revision
    git archive f88e5de | tar -x -C /tmp/before && python bench/image_size.py /tmp/before radcloud
"""
import sys
from pathlib import Path
import importlib.metadata as md
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

root = Path(sys.argv[1]); args = sys.argv[2:]
exclude = [a for i, a in enumerate(args) if i and args[i - 1] == "--exclude"]
reqs = [a for i, a in enumerate(args) if a != "--exclude" and not (i and args[i - 1] == "--exclude")]
import tomllib
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

def own_reqs(extras):
    out = [Requirement(r) for r in project["dependencies"]]
    for e in extras:
        out += [Requirement(r) for r in project.get("optional-dependencies", {}).get(e, [])]
    return out

def closure(start):
    seen = {}
    todo = list(start)
    while todo:
        r = todo.pop()
        name = canonicalize_name(r.name)
        if name == "radcloud":
            todo += own_reqs(r.extras); continue
        key = (name, frozenset(r.extras))
        if key in seen: continue
        seen[key] = True
        dist = md.distribution(r.name)
        for s in dist.requires or []:
            q = Requirement(s)
            if q.marker and not any(q.marker.evaluate({"extra": e}) for e in (list(r.extras) or [""])):
                continue
            todo.append(q)
    return sorted({n for n, _ in seen})

def dist_bytes(name):
    d = md.distribution(name); total = 0
    for f in d.files or []:
        p = d.locate_file(f)
        if p.is_file(): total += p.stat().st_size
    return total

for spec in reqs:
    names = closure([Requirement(spec)])
    deps = {n: dist_bytes(n) for n in names}
    own = sum(p.stat().st_size for p in (root / "radcloud").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts
              and not any(str(p.relative_to(root)).startswith(x) for x in exclude))
    total = sum(deps.values()) + own
    top = sorted(deps.items(), key=lambda kv: -kv[1])[:6]
    print(f"{spec}: {total/2**20:.1f} MiB = radcloud source {own/2**20:.2f} MiB + {len(deps)} distributions "
          f"{sum(deps.values())/2**20:.1f} MiB; largest: " + ", ".join(f"{n} {b/2**20:.1f}" for n, b in top))
