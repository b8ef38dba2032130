"""The ui action with a signed-in user: the user record is read from a real Redis."""

from __future__ import annotations

from radcloud.access import auth
from radcloud.core.settings import Settings
from radcloud.access.users import UserStore
from action_loader import load_action
from fast_hasher import FAST_HASHER

SECRET = "u" * 40


def ui_args(redis_url, path, cookie=None, method="get"):
    headers = {"cookie": f"token={cookie}"} if cookie else {}
    return {"__ow_method": method, "__ow_path": path, "__ow_headers": headers,
            "token_secret": SECRET, "redis_url": redis_url}


def test_page_with_cookie_is_served(redis_client, redis_server):
    store = UserStore(redis_client, FAST_HASHER)
    store.add("alice", "clinician", "correct horse battery")
    token = auth.issue_token(Settings.load({"token_secret": SECRET}, environ={}), store.get("alice"))
    action = load_action("ui")
    result = action.main(ui_args(redis_server, "/search", cookie=token))
    assert result["statusCode"] == 200 and 'id="search-form"' in result["body"]
    assert result["headers"]["Cache-Control"] == "no-store"
    root = action.main(ui_args(redis_server, ""))
    assert root["statusCode"] == 302 and root["headers"]["Location"].endswith("/ui/home")  # Home is the first screen
    assert action.main(ui_args(redis_server, "/search", cookie=token, method="post"))["statusCode"] == 405
