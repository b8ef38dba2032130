"""radcloud.ui.pages and the ui action: pages, assets, static build, the login redirect."""

import re
from pathlib import Path

import pytest

from radcloud.access import auth
from radcloud.core.errors import NotFound
from radcloud.core.settings import Settings
from radcloud.access.users import UserStore
from radcloud.ui.pages import PAGES, WebUI
from action_loader import load_action

ROOT = Path(__file__).resolve().parents[2]
SECRET = "u" * 40


@pytest.fixture(scope="module")
def ui():
    return WebUI(ROOT / "webui")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_in_both_modes(ui, page):
    action = ui.render(page, mode="action", api_base="/api/v1/web/guest/radcloud/", ui_base="/api/v1/web/guest/radcloud/ui")
    static = ui.render(page, mode="static", api_base="https://whisk.example/api/v1/web/ns/radcloud/")
    assert f'<meta name="radcloud-page" content="{page}">' in action
    assert "/api/v1/web/guest/radcloud/ui/static/app.js?v=" in action
    assert 'src="static/app.js?v=' in static and "https://whisk.example/api/v1/web/ns/radcloud/" in static
    if page != "login":
        assert 'href="search.html"' in static and 'href="/api/v1/web/guest/radcloud/ui/jobs"' in action


def test_no_external_requests_in_templates_or_assets(ui):
    """No CDN, font or analytics URL: everything the browser loads is ours."""
    offenders = []
    for path in list((ROOT / "webui").rglob("*")):
        # npm packages (webui/vendor/node_modules, the bundle in static/vendor) name their
        # homepages in comments; what the browser fetches is checked live (tests/e2e/browser).
        if "vendor" in path.relative_to(ROOT / "webui").parts:
            continue
        if path.is_file() and path.suffix in (".html", ".js", ".css", ".svg"):
            text = path.read_text()
            for url in re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text):
                if "www.w3.org/2000/svg" not in url:
                    offenders.append((path.name, url))
    assert offenders == []


def test_pages_have_no_inline_script(ui):
    """script-src 'self' in the CSP: inline scripts would be blocked anyway."""
    for page in PAGES:
        html = ui.render(page, mode="static", api_base="/x/")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page
        assert " onclick=" not in html


def test_assets_and_traversal(ui):
    css = ui.asset("app.css")
    assert css.content_type == "text/css" and not css.binary and b":root" in css.body
    assert ui.asset("favicon.svg").content_type == "image/svg+xml"
    for bad in ("../templates/base.html", "/etc/passwd", "", "missing.js"):
        with pytest.raises(NotFound):
            ui.asset(bad)


def test_unknown_page_is_not_found(ui):
    with pytest.raises(NotFound):
        ui.render("secrets", mode="static", api_base="/")


def test_build_writes_a_static_site(ui, tmp_path):
    files = ui.build(tmp_path, api_base="https://h/api/v1/web/ns/radcloud/",
                     plugins=[{"name": "dcm2png", "parameters": []}], viewer_url="https://pacs/viewer?s={study_uid}")
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"index.html", "login.html", "search.html", "jobs.html", "plugins.json", "static/app.js"} <= names
    assert 'content="https://pacs/viewer?s={study_uid}"' in (tmp_path / "view.html").read_text()


def test_build_cli(tmp_path):
    from radcloud.ui.pages import main

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    assert main([str(tmp_path / "site"), "--api-base", "https://h/api/v1/web/ns/radcloud",
                 "--plugins-dir", str(plugins)]) == 0
    assert 'content="https://h/api/v1/web/ns/radcloud/"' in (tmp_path / "site" / "search.html").read_text()


# -- the ui action ---------------------------------------------------------------------

# No Redis here: a request without a valid token is answered before any lookup
# (the unit tier's guard would fail a connection). The signed-in path, which
# reads the user from Redis, is in tests/integration/local/test_webui_action.py.
NO_REDIS = "unix:///nonexistent/redis.sock"


def ui_args(redis_url, path, cookie=None, method="get"):
    headers = {"cookie": f"token={cookie}"} if cookie else {}
    return {"__ow_method": method, "__ow_path": path, "__ow_headers": headers,
            "token_secret": SECRET, "redis_url": redis_url}


def test_page_without_token_redirects_to_login():
    action = load_action("ui")
    result = action.main(ui_args(NO_REDIS, "/jobs"))
    assert result["statusCode"] == 302
    assert result["headers"]["Location"].endswith("/ui/login?next=jobs")
    forged = action.main(ui_args(NO_REDIS, "/search", cookie="a.b.c"))
    assert forged["statusCode"] == 302


def test_login_page_and_assets_are_public():
    action = load_action("ui")
    page = action.main(ui_args(NO_REDIS, "/login"))
    assert page["statusCode"] == 200 and "login-form" in page["body"]
    assert "script-src 'self'" in page["headers"]["Content-Security-Policy"]
    js = action.main(ui_args(NO_REDIS, "/static/app.js"))
    assert js["headers"]["Content-Type"] == "application/javascript" and "window.RC" in js["body"]
    svg = action.main(ui_args(NO_REDIS, "/static/favicon.svg"))
    assert svg["body"].startswith("<svg")
    missing = action.main(ui_args(NO_REDIS, "/static/../../radcloud/auth.py"))
    assert missing["error"]["statusCode"] == 404


def test_binary_assets_are_base64(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    asset = WebUI(tmp_path).asset("logo.png")
    assert asset.binary and asset.content_type == "image/png"


def test_static_files_are_kept_for_good_only_under_a_url_that_cannot_change(tmp_path):
    # dwv's bundle is named by its content hash (webui/vendor/build.mjs writes modules.json)
    root = tmp_path / "webui"
    (root / "static" / "vendor" / "dwv").mkdir(parents=True)
    (root / "static" / "app.js").write_text("window.RC = {};")
    (root / "static" / "vendor" / "dwv" / "dwv-AB12CD34.js").write_text("export const App = 1;")
    (root / "static" / "vendor" / "dwv" / "modules.json").write_text('{"entry": "dwv-AB12CD34.js"}')
    (root / "templates").symlink_to(ROOT / "webui" / "templates")
    ui = WebUI(root)
    forever, day = "public, max-age=31536000, immutable", "public, max-age=86400"
    assert ui.cache_control("vendor/dwv/dwv-AB12CD34.js") == forever
    assert ui.cache_control("app.js", ui.version) == forever
    assert ui.cache_control("app.js", "0ld0ld0ld0") == day and ui.cache_control("app.js") == day
    assert ui.cache_control("vendor/dwv/assets/workers/rle.worker.min.js") == day
    # the viewer preloads the hashed URL and imports it; every other page names it for app.js to fetch at idle
    viewer = ui.render("viewer", mode="action", api_base="/api/", ui_base="/ui")
    assert '<link rel="modulepreload" id="rc-dwv" href="/ui/static/vendor/dwv/dwv-AB12CD34.js">' in viewer
    search = ui.render("search", mode="static", api_base="/api/")
    assert '<meta name="radcloud-viewer-module" content="static/vendor/dwv/dwv-AB12CD34.js">' in search
    # not built: no module named, and nothing kept for good by name
    (root / "static" / "vendor" / "dwv" / "modules.json").unlink()
    assert WebUI(root).viewer_module == "" and WebUI(root).cache_control("") == day


def test_the_ui_action_says_how_long_a_static_file_may_be_kept():
    action = load_action("ui")
    version = WebUI(ROOT / "webui").version
    kept = action.main({**ui_args(NO_REDIS, "/static/app.js"), "v": version})
    assert kept["headers"]["Cache-Control"] == "public, max-age=31536000, immutable"
    stale = action.main({**ui_args(NO_REDIS, "/static/app.js"), "v": "0ld0ld0ld0"})
    assert stale["headers"]["Cache-Control"] == "public, max-age=86400"
