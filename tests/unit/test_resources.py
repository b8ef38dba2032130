"""radcloud.run.resources: descriptor resources -> action limits, and the refusal of plugins that cannot fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radcloud.ops import deploy
from radcloud.core.errors import Conflict
from radcloud.run.resources import ActionLimits, action_limits, check_fits, misfits

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("descriptor, limits", [
    ({}, ActionLimits(256, 300_000)),                                          # defaults: 256 Mi, 300 s (+ margin, clamped)
    ({"max_memory_limit": "300Mi", "radcloud": {"timeout_s": 60}}, ActionLimits(300, 90_000)),
    ({"max_memory_limit": "2Gi", "radcloud": {"timeout_s": 600}}, ActionLimits(512, 300_000)),   # clamped
    ({"max_memory_limit": "64Mi"}, ActionLimits(128, 300_000)),                # OpenWhisk's minimum
    ({"min_memory_limit": "200Mi"}, ActionLimits(200, 300_000)),               # no max: the min
    ({"max_memory_limit": "300M"}, ActionLimits(287, 300_000)),                # 300 MB = 286.1 MiB, rounded up
])
def test_action_limits_from_the_descriptor(descriptor, limits):
    assert action_limits(descriptor) == limits


def test_a_plugin_whose_minimum_memory_cannot_fit_is_refused_naming_both_numbers():
    desc = {"name": "big", "min_memory_limit": "1Gi", "max_memory_limit": "4Gi"}
    with pytest.raises(Conflict) as err:
        check_fits(desc)
    text = err.value.message
    assert "min_memory_limit 1Gi (1024 MiB)" in text and "memorySize 512 MB" in text and "plugin-big" in text
    assert err.value.status == 409 and err.value.field == "plugin"


def test_gpus_and_workers_cannot_be_given_by_an_action():
    problems = misfits({"name": "g", "min_gpu_limit": 1, "min_number_of_workers": 4}, ActionLimits(512, 1000))
    assert len(problems) == 2 and "GPU" in problems[0] and "4 but an action is one container" in problems[1]


def test_exactly_the_limit_fits():
    assert check_fits({"name": "x", "min_memory_limit": "512Mi", "max_memory_limit": "3Gi"}).memory_mb == 512


# Plugins that need more than an action: dispatch routes them to a Slurm cluster (radcloud.work.routing).
HEAVY = {"ct-resample"}


@pytest.mark.parametrize("plugin", sorted(p.name for p in deploy.plugin_dirs(ROOT / "plugins")))
def test_every_shipped_plugin_fits_the_action_the_manifest_deploys(plugin):
    descriptor = json.loads((ROOT / "plugins" / plugin / "descriptor.json").read_text())
    limits = action_limits(descriptor)
    manifest = deploy.manifest_actions(deploy.load_manifest())[f"plugin-{plugin}"]["limits"]
    assert manifest == limits.manifest()
    if plugin in HEAVY:
        assert misfits(descriptor, limits), f"{plugin} is listed as heavy but fits an action"
    else:
        check_fits(descriptor)
