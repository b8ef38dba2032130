"""Property-based fuzzing of Settings.load (radcloud/core/settings.py): no sockets, fast.

Any params/environment either load, or raise ConfigError naming the field —
never another exception; and secrets never show in repr/str/public().
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from radcloud.core.errors import ConfigError
from radcloud.core.settings import ENV_PREFIX, Secret, Settings

NAMES = [f.name for f in dataclasses.fields(Settings)]
SECRET_NAMES = [f.name for f in dataclasses.fields(Settings) if f.type in ("Secret", Secret)]
VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | \
    st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(NAMES + ["other", "__ow_method"]), VALUES, max_size=6),
       st.dictionaries(st.sampled_from([ENV_PREFIX + n.upper() for n in NAMES] + ["__OW_API_KEY", "__OW_API_HOST"]),
                       st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                               max_size=20), max_size=6))
def test_load_succeeds_or_names_the_field(params, environ):
    try:
        loaded = Settings.load(params, environ)
    except ConfigError as exc:
        assert exc.field in NAMES and exc.message and exc.status == 500
        return
    assert isinstance(loaded, Settings)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=6, max_size=40).map(lambda s: "k3y-" + s))
def test_secrets_never_print(secret):
    loaded = Settings.load({name: secret for name in SECRET_NAMES}, environ={"__OW_API_KEY": secret})
    for text in (repr(loaded), str(loaded), json.dumps(loaded.public()), f"{loaded!r}"):
        assert secret not in text
    assert all(getattr(loaded, n).reveal() == secret for n in SECRET_NAMES)


def test_wrong_types_name_the_field():
    for name, bad in (("token_ttl_s", "ten"), ("token_ttl_s", 1.5), ("s3_secure", "maybe"), ("orthanc_timeout_s", [1]),
                      ("redis_url", 42), ("presign_ttl_s", True), ("retrieve_workers", "")):
        try:
            Settings.load({name: bad}, environ={})
        except ConfigError as exc:
            assert exc.field == name and name in exc.message
        else:
            raise AssertionError(f"{name}={bad!r} was accepted")
