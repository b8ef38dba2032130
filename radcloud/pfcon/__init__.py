"""radcloud as a ChRIS compute resource: pfcon's v6 API over OpenWhisk.

A ChRIS backend (CUBE) talks to every compute resource through pfcon's REST
API. This package speaks it, so a hospital registers its radcloud
deployment in ChRIS and ChRIS plugin jobs run through radcloud's dispatch
(shards, cache, status) with no change to ChRIS (docs/chris.md):

* :mod:`radcloud.pfcon.protocol` — the wire format: form parsing exactly as
  pfcon's ``parser_plugin``, ``cmd``, statuses, ``compute`` answers;
* :mod:`radcloud.pfcon.service` — copy / plugin / upload / delete jobs in
  in-network S3 mode, with pfcon's 409 ordering and idempotent POSTs;
* :mod:`radcloud.pfcon.web` — routes, pfcon's own JWT, error shape;
* :func:`service_from_settings` — the production wiring.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import dataclasses

from radcloud.core.errors import ConfigError
from radcloud.core.settings import Secret, Settings


def images_table(raw: Any) -> dict[str, str]:
    """``pfcon_images``: a JSON object (or mapping) of container image -> plugin name."""
    if not raw:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError("pfcon_images must be a JSON object of image -> plugin name") from None
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError("pfcon_images must be a JSON object of image -> plugin name")
    return {str(k): v for k, v in raw.items()}


def service_from_settings(settings: Settings, *, need_invoker: bool = False, bucket: str = "",
                          images: Mapping[str, str] | None = None) -> Any:
    """A :class:`~radcloud.pfcon.service.PfconService` on the real Redis, S3 and OpenWhisk.

    ``bucket`` is ChRIS's bucket in the shared store (default: radcloud's own).
    """
    from radcloud.work.jobservices import JobServices, jobs_redis
    from radcloud.pfcon.service import PfconService, Records
    from radcloud.store.storage import ObjectStore

    services = JobServices.from_settings(settings, need_invoker=need_invoker)
    store = services.store
    chris = store if not bucket or bucket == store.bucket else ObjectStore(store.client, bucket)
    return PfconService(Records(jobs_redis(settings)), store, chris, jobs=services.jobs,
                        results=services.results, registry=services.registry,
                        dispatcher=services.dispatcher, finaliser=services.finaliser,
                        executors=services.executor_named, images=images)


def option(args: Mapping[str, Any], name: str, default: str = "") -> Any:
    """A pfcon package parameter that is not a radcloud setting: args, then RADCLOUD_<NAME>."""
    value = args.get(name)
    if value in (None, ""):
        value = os.environ.get("RADCLOUD_" + name.upper(), default)
    return value


def with_credentials(settings: Settings, args: Mapping[str, Any]) -> Settings:
    """Take ``pfcon_user``/``pfcon_password`` from the action's bound parameters.

    :func:`radcloud.api.action.settings_from` drops unbound setting names from a
    web request's args, because a ``web: true`` caller could send them. The
    pfcon action is ``web: raw``: a caller's query and body arrive only as
    ``__ow_query``/``__ow_body``, so any other argument was bound at deploy
    time (the action's inputs in deploy/manifest.yaml) and is safe to read.
    """
    if not args.get("__ow_method") or "__ow_body" not in args and "__ow_query" not in args:
        return settings  # not a raw web request: the wrapper's settings stand
    updates: dict[str, Any] = {}
    if isinstance(args.get("pfcon_user"), str) and args["pfcon_user"]:
        updates["pfcon_user"] = args["pfcon_user"]
    if isinstance(args.get("pfcon_password"), str) and args["pfcon_password"]:
        updates["pfcon_password"] = Secret(args["pfcon_password"])
    return dataclasses.replace(settings, **updates) if updates else settings
