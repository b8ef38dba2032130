#!/usr/bin/env bash
# Runs the tests: every tier (no argument, or `all`), or `fast`, the unit tier
# (in-process, no services: make test-fast); further arguments go to pytest.
# As root, services and tests run inside a private network namespace (Orthanc
# cannot bind to loopback only; in a fresh namespace nothing is reachable from
# outside and nothing leaks out). Slurm resolves even numeric addresses with
# AI_ADDRCONFIG, which fails when loopback's 127.0.0.1 is the namespace's only
# IPv4 address: a second loopback address (127.0.0.2) satisfies it.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
tier=all
case "${1:-}" in
  fast|all) tier=$1; shift ;;
esac
if [ "$tier" = fast ]; then
  # The unit tier uses neither schemathesis, hypothesis nor anyio: not loading
  # their pytest plugins saves a third of its CPU time.
  args=(-q -rfEs --durations=5 --junitxml=artifacts/junit-fast.xml
        -p no:schemathesis -p no:hypothesispytest -p no:anyio tests/unit "$@")
else
  args=(-q -rfEs --durations=15 --junitxml=artifacts/junit.xml "$@")
fi

if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  echo "running tests in a private network namespace"
  unshare --net bash -c 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec .venv/bin/pytest "$@"' _ "${args[@]}"
else
  echo "running tests on the host network (not root, or unshare unavailable)"
  .venv/bin/pytest "${args[@]}"
fi
rc=$?
if [ $rc -eq 5 ]; then
  # pytest's "no tests collected": a suite that runs nothing is broken.
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $rc
