"""``localwhisk serve`` and ``localwhisk deploy``: the entry points (the only place logging is configured)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_STATE = Path(os.environ.get("LOCALWHISK_STATE_DIR", ".localwhisk"))


def _serve(args: argparse.Namespace) -> int:
    from localwhisk.activations import StorePolicy
    from localwhisk.server import ServeConfig, parse_images, serve

    try:
        images = parse_images(args.image, args.images_file)
        store_policy = StorePolicy.from_env(os.environ, blocking=args.store_blocking_result_level,
                                            non_blocking=args.store_non_blocking_result_level)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(ServeConfig(state_dir=args.state_dir, host=args.host, port=args.port,
                      max_concurrent=args.max_concurrent, prewarm=args.prewarm,
                      max_containers=args.max_containers, sandbox=args.sandbox, images=images,
                      preload=_modules(args.preload), memory_limits=args.memory_limits,
                      store_policy=store_policy, alarm_tick=args.alarm_tick,
                      fires_per_minute=args.fires_per_minute))
    return 0


def _modules(values: list[str]) -> tuple[str, ...]:
    """``--preload a,b --preload c`` -> ("a", "b", "c"), first occurrence kept."""
    return tuple(dict.fromkeys(m.strip() for v in values for m in v.split(",") if m.strip()))


def _param_value(raw: str):
    """``--param k v``: JSON when it parses (numbers, objects), else the string, like wskdeploy."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _deploy(args: argparse.Namespace) -> int:
    from localwhisk.manifest import ManifestError, load_plan
    from localwhisk.wskclient import DeployError, WhiskClient, apply, http_transport, resolve_credentials

    params = {k: _param_value(v) for k, v in args.param or []}
    try:
        first = load_plan(args.manifest, args.deployment, params)  # credentials may live in the deployment file
        wskprops = args.wskprops or (args.state_dir / ".wskprops" if args.state_dir else None)
        host, auth, ns = resolve_credentials(args.apihost, args.auth, args.namespace, first, wskprops)
        client = WhiskClient(http_transport(host), auth, ns)
        plan = load_plan(args.manifest, args.deployment, params, kinds=client.kinds())
        for w in plan.warnings:
            print(f"Warning: {w}", file=sys.stderr)
        apply(plan, client)
    except (ManifestError, DeployError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        print("Deployment did not complete sucessfully.", file=sys.stderr)
        return 1
    print("Deployment completed successfully.")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="localwhisk", description="A single-machine OpenWhisk-compatible runner.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the OpenWhisk API (127.0.0.1 by default)")
    s.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="entities, activations, keys, .wskprops")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3233, help="0 picks a free port")
    s.add_argument("--max-concurrent", type=int, default=30, help="concurrent activations per namespace (429 above)")
    s.add_argument("--fires-per-minute", type=int, default=60,
                   help="trigger fires per namespace and minute (429 above; OpenWhisk's limits.triggers.fires.perMinute)")
    s.add_argument("--prewarm", type=int, default=1, help="stem-cell containers kept ready")
    s.add_argument("--max-containers", type=int, default=8)
    s.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto", help="for blackbox actions")
    s.add_argument("--memory-limits", choices=("auto", "cgroup2", "cgroup1", "watch"), default="auto",
                   help="how each container is held to its memory limit (docs/localwhisk.md)")
    s.add_argument("--image", action="append", default=[], metavar="IMAGE=DIR[:DIR]",
                   help="map a docker image to local PYTHONPATH dirs (repeatable)")
    s.add_argument("--images-file", action="append", default=[], type=Path,
                   help="JSON/YAML {image: {python, pythonpath: [..], env: {..}, preload: [..]}}")
    s.add_argument("--preload", action="append", default=[], metavar="MODULE[,MODULE]",
                   help="modules every stem cell imports before it gets code (repeatable)")
    levels = "STORE_ALWAYS, STORE_FAILURES or STORE_FAILURES_NOT_APPLICATION_ERRORS"
    s.add_argument("--store-blocking-result-level", metavar="LEVEL",
                   help=f"which blocking activations are stored: {levels} (OpenWhisk's "
                        "whisk.activation.store-blocking-result-level; default "
                        "$CONFIG_whisk_activation_storeBlockingResultLevel or STORE_ALWAYS)")
    s.add_argument("--store-non-blocking-result-level", metavar="LEVEL",
                   help=f"the same for non-blocking activations (default "
                        "$CONFIG_whisk_activation_storeNonBlockingResultLevel or STORE_ALWAYS)")
    s.add_argument("--alarm-tick", type=float, default=1.0, metavar="SECONDS",
                   help="how often the built-in alarms feeds look for due schedules (0 turns them off)")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=_serve)

    d = sub.add_parser("deploy", help="deploy a wskdeploy manifest over the REST API")
    d.add_argument("-m", "--manifest", type=Path, default=Path("manifest.yaml"))
    d.add_argument("-d", "--deployment", type=Path)
    d.add_argument("--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    d.add_argument("--apihost", "-u", dest="apihost")
    d.add_argument("--auth")
    d.add_argument("--namespace", "-n")
    d.add_argument("--wskprops", type=Path, help="credentials file (default $WSK_CONFIG_FILE or ~/.wskprops)")
    d.add_argument("--state-dir", type=Path, help="read <state-dir>/.wskprops of a local server")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(func=_deploy)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
