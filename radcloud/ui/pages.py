"""The clinician web UI: render ``webui/`` templates, serve or build them.

The UI is Jinja2 templates plus plain static files (CSS, vanilla JS, no
build toolchain, nothing fetched from the internet). The same pages are

* served by the ``ui`` web action (``functions/ui``) — pages under
  ``/api/v1/web/<ns>/<pkg>/ui/<page>``, assets under ``.../ui/static/...`` —
  for localwhisk and small deployments, and
* built into a folder for any static host in production::

      python -m radcloud.ui.pages out/ --api-base https://whisk.example/api/v1/web/ns/radcloud/

Pages talk to the web actions over HTTP only (``api_base`` + action name),
with the token from the login page. Where the UI files live: ``webui/`` at
the repository root, or ``$RADCLOUD_WEBUI_DIR`` (the runtime image copies
them to /opt/radcloud/webui).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import mimetypes
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import jinja2

from radcloud.core.errors import NotFound
from radcloud.run.registry import ui_words

PAGES = ("login", "home", "search", "pull", "run", "jobs", "view", "audit", "automations", "viewer")
# What each page is for, shown in the navigation (login is not in it).
NAV = (("home", "Home"), ("search", "Search"), ("pull", "Pull"), ("run", "Run"), ("jobs", "Jobs"), ("view", "Results"))
# Where webui/vendor/build.mjs writes the viewer's bundle, under static/.
VIEWER_BUNDLE = "vendor/dwv"
_TEXT_TYPES = {".css": "text/css", ".js": "application/javascript", ".svg": "image/svg+xml",
               ".html": "text/html", ".json": "application/json", ".txt": "text/plain"}


def default_root(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("RADCLOUD_WEBUI_DIR"):
        return Path(environ["RADCLOUD_WEBUI_DIR"])
    return Path(__file__).resolve().parents[2] / "webui"


@dataclasses.dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str

    @property
    def binary(self) -> bool:
        return not (self.content_type.startswith("text/") or self.content_type in
                    ("application/javascript", "application/json", "image/svg+xml"))


class WebUI:
    """Templates and assets from one ``webui/`` directory.

    ``mode`` is ``action`` (pages at ``ui_base/<page>``) or ``static``
    (pages at ``<page>.html`` next to each other).
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.static_dir = self.root / "static"
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.root / "templates")),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self._version: str | None = None
        self._viewer_module: str | None = None

    @property
    def version(self) -> str:
        """A short hash of every asset: appended to asset URLs so browsers
        may cache them for long and still never run stale code."""
        if self._version is None:
            digest = hashlib.sha256()
            for path in sorted(self.static_dir.rglob("*")):
                if path.is_file():
                    digest.update(path.relative_to(self.static_dir).as_posix().encode())
                    digest.update(path.read_bytes())
            self._version = digest.hexdigest()[:10]
        return self._version

    @property
    def viewer_module(self) -> str:
        """dwv's bundled module, by the content-hashed name ``webui/vendor/build.mjs`` gave it
        (``vendor/dwv/dwv-<hash>.js``, from its ``modules.json``); "" when the bundle is not built."""
        if self._viewer_module is None:
            try:
                entry = json.loads((self.static_dir / VIEWER_BUNDLE / "modules.json").read_text())["entry"]
                self._viewer_module = f"{VIEWER_BUNDLE}/{entry}"
            except (OSError, ValueError, KeyError):
                self._viewer_module = ""
        return self._viewer_module

    def cache_control(self, name: str, version: str | None = None) -> str:
        """The Cache-Control of static file ``name`` asked for with ``?v=version``.

        What cannot change under its URL is kept for good (``immutable``: not
        even revalidated on a reload): a content-hashed name (dwv's module),
        or any file asked for with the current asset version, which page
        links carry. Anything else (an old version, dwv's workers) for a day.
        """
        if (name and name == self.viewer_module) or (version and version == self.version):
            return "public, max-age=31536000, immutable"
        return "public, max-age=86400"

    def render(self, page: str, *, mode: str, api_base: str, ui_base: str = "", viewer_url: str = "") -> str:
        """The HTML of ``page``.

        Raises:
            NotFound: no such page.
        """
        if page not in PAGES:
            raise NotFound(f"no page {page!r}; pages: {', '.join(PAGES)}", field="page")
        if mode == "action":
            def page_url(name: str) -> str:
                return f"{ui_base}/{name}"
            static_base = f"{ui_base}/static"
        else:
            def page_url(name: str) -> str:
                return f"{name}.html"
            static_base = "static"
        version = self.version
        context: dict[str, Any] = {
            "page": page, "nav": NAV, "mode": mode, "api_base": api_base,
            "ui_base": ui_base, "page_url": page_url, "viewer_url": viewer_url,
            "static": lambda name: f"{static_base}/{name}?v={version}",
            # named by its content hash already: no ?v=, so that every page links the same URL
            "viewer_module": f"{static_base}/{self.viewer_module}" if self.viewer_module else "",
        }
        return self.env.get_template(f"{page}.html").render(**context)

    def asset(self, name: str) -> Asset:
        """A static file by its path under ``static/``; never outside it.

        Raises:
            NotFound: missing, or the name escapes the folder.
        """
        base = self.static_dir.resolve()
        path = (base / name).resolve()
        if not name or base not in path.parents or not path.is_file():
            raise NotFound(f"no static file {name!r}", field="path")
        suffix = path.suffix.lower()
        ctype = _TEXT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Asset(path.read_bytes(), ctype)

    def build(self, out: Path | str, *, api_base: str, plugins: list[dict[str, Any]] | None = None,
              viewer_url: str = "") -> list[Path]:
        """Write every page and asset into ``out`` for a static host.

        ``plugins`` (descriptors) are written as ``plugins.json`` so the Run
        page works without a registry endpoint. Returns the files written.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for page in PAGES:
            target = out / f"{page}.html"
            target.write_text(self.render(page, mode="static", api_base=api_base, viewer_url=viewer_url), encoding="utf-8")
            written.append(target)
        index = out / "index.html"
        index.write_text(self.render("home", mode="static", api_base=api_base, viewer_url=viewer_url), encoding="utf-8")
        written.append(index)
        if self.static_dir.is_dir():
            shutil.copytree(self.static_dir, out / "static", dirs_exist_ok=True)
            written.extend(p for p in (out / "static").rglob("*") if p.is_file())
        if plugins is not None:
            target = out / "plugins.json"
            target.write_text(json.dumps({"plugins": plugins}, indent=1), encoding="utf-8")
            written.append(target)
        return written


def readable_name(name: str) -> str:
    """A parameter's name as words, the label of a parameter its descriptor gives no plain words
    (a ChRIS plugin from elsewhere): ``thumbnailSize`` -> "Thumbnail size", ``bodyHU`` -> "Body HU",
    ``b_ignoreInputDir`` -> "Ignore input dir" (ChRIS names a flag's variable ``b_...``)."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", re.sub(r"^b_(?=.)", "", name)).replace("_", " ").replace("-", " ")
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words.split())
    return text[:1].upper() + text[1:] or name


def plugin_catalogue(registry: Any) -> list[dict[str, Any]]:
    """Each plugin's summary plus its parameters, for the Run page's forms, in plain words.

    The words a clinician reads come from the descriptor's ``radcloud.ui``
    block (a radcloud extension that ChRIS ignores; :func:`radcloud.run.registry.ui_words`):
    ``title``, ``summary`` and each parameter's ``label`` and ``help``. The
    descriptor's own description and parameter help (engineer language:
    libraries, flags, standards) travel as ``details``, shown behind a
    disclosure. A parameter without plain words is labelled with its name as
    words (:func:`readable_name`) and helped by the descriptor's own help.
    """
    catalogue = []
    for name in registry.names():
        descriptor = registry.show(name)
        words = ui_words(descriptor)
        entry = registry.get(name).summary()
        entry.update(title=words["title"], summary=words["summary"], details=descriptor.get("description") or "")
        entry["parameters"] = []
        for p in descriptor.get("parameters", []):
            if not p.get("ui_exposed", True):
                continue
            item = {k: p.get(k) for k in ("name", "type", "optional", "default", "flag", "action", "ui_exposed")}
            plain = words["parameters"].get(p["name"], {})
            technical = " ".join(x for x in (p.get("flag") or "", p.get("help") or "") if x)
            item.update(label=plain.get("label") or readable_name(p["name"]), help=plain.get("help") or p.get("help") or "",
                        details=technical)
            entry["parameters"].append(item)
        catalogue.append(entry)
    return catalogue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radcloud.ui.pages",
                                     description="Build the radcloud web UI into a folder for a static host.")
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--api-base", required=True,
                        help="URL prefix of the web actions, e.g. https://host/api/v1/web/ns/radcloud/")
    parser.add_argument("--plugins-dir", type=Path, default=None,
                        help="plugins folder to describe in plugins.json (default: the registry's)")
    parser.add_argument("--viewer-url", default="",
                        help="PACS viewer link for a study, {study_uid} is replaced (e.g. an OHIF URL)")
    parser.add_argument("--webui-dir", type=Path, default=None, help="webui/ folder (default: the repository's)")
    args = parser.parse_args(argv)
    api_base = args.api_base if args.api_base.endswith("/") else args.api_base + "/"
    from radcloud.run.registry import Registry

    plugins = plugin_catalogue(Registry(args.plugins_dir))
    files = WebUI(args.webui_dir).build(args.out, api_base=api_base, plugins=plugins,
                                               viewer_url=args.viewer_url)
    print(f"wrote {len(files)} files to {args.out} ({len(plugins)} plugins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
