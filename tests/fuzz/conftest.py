"""The fuzz tier's world: the e2e tier's ``job_world`` (tests/conftest.py), with users of every role.

The fuzz tier runs right after tests/e2e, so it fuzzes the world the e2e tests used rather than
starting a stack, localwhisk and deploy of its own: ``world`` is that :class:`jobflow.JobWorld`
made an :class:`rcworld.RcWorld` (its web client, tokens and seeding helpers; the ``misbehave``
fault plugin is one of tests/e2e/plugins). What the e2e tests left there (studies, jobs) is
data like any site's: no fuzz test counts what the world holds.
"""

from __future__ import annotations

import pytest

from rcworld import RcWorld


@pytest.fixture(scope="session")
def world(job_world):
    return RcWorld.adopt(job_world)
