"""Result cache keys: canonical, sensitive to what changes a result (hits over Redis: tests/integration/local)."""

from __future__ import annotations

import pytest

from radcloud.work.cache import cache_key


def test_key_ignores_param_and_input_order():
    a = cache_key("dcm2png", "1.0", {"x": 1, "y": "a"}, ["bb", "AA"])
    b = cache_key("dcm2png", "1.0", {"y": "a", "x": 1}, ["aa", "bb"])
    assert a == b and len(a) == 64


@pytest.mark.parametrize("change", [
    dict(plugin="dicom-tags"), dict(version="1.1"), dict(params={"x": 2}), dict(md5s=["aa", "cc"]),
])
def test_key_changes_with_plugin_version_params_or_inputs(change):
    base = dict(plugin="dcm2png", version="1.0", params={"x": 1}, md5s=["aa", "bb"])
    other = {**base, **change}
    assert cache_key(base["plugin"], base["version"], base["params"], base["md5s"]) != \
        cache_key(other["plugin"], other["version"], other["params"], other["md5s"])
