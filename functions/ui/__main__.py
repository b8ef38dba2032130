"""Web action ``ui``: serves the clinician web UI (``webui/``).

    GET  ui/                → redirect to the home page
    GET  ui/login           → the login page (public)
    GET  ui/static/<file>   → CSS/JS/images (public: no data in them; cached, for good
                              when the URL says the version: WebUI.cache_control)
    GET  ui/plugins.json    → plugin descriptors for the Run page (logged in)
    GET  ui/<page>          → a page, for a browser holding the ``token``
                              cookie; otherwise a redirect to the login page

The pages hold no patient data themselves: they fetch it from the other
web actions with the user's token, which re-check it. The server-side
check here keeps a stranger from even seeing the application shell.
"""

import base64
import os

from radcloud.access import auth
from radcloud.api.action import ALL_ROLES, run
from radcloud.core.errors import RadcloudError
from radcloud.ui.pages import PAGES, WebUI, plugin_catalogue

_ui = None
# Pages: no caching (they depend on who is logged in); script only from
# here, no plugins, no framing by other sites.
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob: http: https:; connect-src 'self' http: https:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}


def _webui():
    global _ui
    if _ui is None:
        _ui = WebUI()
    return _ui


def _bases():
    """(ui_base, api_base) from the action's own name, e.g. /guest/radcloud/ui."""
    fqn = os.environ.get("__OW_ACTION_NAME", "/guest/radcloud/ui")
    package_path = fqn.rsplit("/", 1)[0]
    return f"/api/v1/web{fqn}", f"/api/v1/web{package_path}/"


def _redirect(location):
    return {"statusCode": 302, "headers": {"Location": location, "Cache-Control": "no-store"}, "body": ""}


def _page(page, ui_base, api_base, viewer_url=""):
    html = _webui().render(page, mode="action", api_base=api_base, ui_base=ui_base, viewer_url=viewer_url)
    return {"statusCode": 200, "headers": dict(_PAGE_HEADERS), "body": html}


def _logged_in(request, settings):
    try:
        return auth.authenticate(request, settings, ALL_ROLES, {})
    except RadcloudError:
        return None


def handle(request, settings, _principal):
    ui_base, api_base = _bases()
    path = request.path.strip("/")
    if request.method not in ("get", "head"):
        return {"statusCode": 405, "headers": {"Allow": "GET, HEAD"}, "body": ""}
    if path.startswith("static/"):
        name = path[len("static/"):]
        asset = _webui().asset(name)
        body = base64.b64encode(asset.body).decode() if asset.binary else asset.body.decode("utf-8")
        return {"statusCode": 200, "body": body,
                "headers": {"Content-Type": asset.content_type, "X-Content-Type-Options": "nosniff",
                            "Cache-Control": _webui().cache_control(name, request.params.get("v"))}}
    if path == "":
        return _redirect(f"{ui_base}/home")
    page = path[:-5] if path.endswith(".html") else path
    if page == "login":
        return _page("login", ui_base, api_base)
    if page not in PAGES and page != "plugins.json":
        return _redirect(f"{ui_base}/home")
    principal = _logged_in(request, settings)
    if principal is None:
        return _redirect(f"{ui_base}/login?next={page}")
    if page == "plugins.json":
        from radcloud.run.registry import Registry

        return {"statusCode": 200, "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
                "body": {"plugins": plugin_catalogue(Registry())}}
    return _page(page, ui_base, api_base, settings.viewer_url)


def main(args):
    return run(args, handle, public=True)
