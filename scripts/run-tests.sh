#!/usr/bin/env bash
# Runs the tests: every tier (no argument, or `all`), or `fast`, the unit tier
# (in-process, no services: make test-fast); further arguments go to pytest.
#
# `all` without further arguments (make test, CI) runs three lanes at once, each
# its own pytest process in its own private network namespace, about even (five
# fresh-clone runs: 300-335 s, 317-380 s and 320-363 s; rest ended last in
# every run, by 10-20 s, until the unit tier moved to browser):
#   browser  tests/unit (in-process, before any world starts), then
#            tests/e2e/browser, tests/realfiles and tests/load
#   jobs     the rest of tests/e2e, tests/fuzz (which fuzzes their job world),
#            tests/security, tests/reliability
#   rest     everything else: tests/integration
# With two lanes the cores were idle 26 % of the lanes' time (polls, a Slurm or
# Orthanc start, a browser waiting for a page, a fault test waiting out a
# restart); a third lane fills those waits, at the cost of one more start of
# the e2e job world (the browser lane's). Each lane keeps the serial run's
# properties: tests in collection order, each world started once and stopped
# after its last test. RADCLOUD_TEST_LANES=1 runs one process; with arguments
# (test paths, -k …) one process runs them.
#
# As root, services and tests run inside a private network namespace (Orthanc
# cannot bind to loopback only; in a fresh namespace nothing is reachable from
# outside and nothing leaks out, and two lanes never meet on a port). Slurm
# resolves even numeric addresses with AI_ADDRCONFIG, which fails when
# loopback's 127.0.0.1 is the namespace's only IPv4 address: a second loopback
# address (127.0.0.2) satisfies it.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
tier=all
case "${1:-}" in
  fast|all) tier=$1; shift ;;
esac

# pytest, in a private network namespace when root: run_pytest ARGS...
run_pytest() {
  if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
    unshare --net bash -c 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec .venv/bin/pytest "$@"' _ "$@"
  else
    .venv/bin/pytest "$@"
  fi
}

# pytest's exit status 5 is "no tests collected": a suite that runs nothing is broken.
collected_nothing() {
  echo "error: pytest collected no tests${1:+ ($1)}" >&2
}

if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  echo "running tests in a private network namespace"
else
  echo "running tests on the host network (not root, or unshare unavailable)"
fi

if [ "$tier" = fast ]; then
  # The unit tier uses neither schemathesis, hypothesis nor anyio: not loading
  # their pytest plugins saves a third of its CPU time.
  run_pytest -q -rfEs --durations=5 --junitxml=artifacts/junit-fast.xml \
    -p no:schemathesis -p no:hypothesispytest -p no:anyio tests/unit "$@"
  rc=$?
  [ $rc -eq 5 ] && { collected_nothing; exit 1; }
  exit $rc
fi

common=(-q -rfEs --durations=15)
if [ $# -gt 0 ] || [ "${RADCLOUD_TEST_LANES:-3}" = 1 ]; then
  run_pytest "${common[@]}" --junitxml=artifacts/junit.xml "$@"
  rc=$?
  [ $rc -eq 5 ] && { collected_nothing; exit 1; }
  exit $rc
fi

# The lanes. Each prints its lines prefixed with its name as they come, and
# its summary again at the end, so a failure is found without interleaving.
lane() {  # lane NAME PYTEST-ARGS...
  local name=$1; shift
  run_pytest "${common[@]}" --junitxml="artifacts/junit-$name.xml" "$@" 2>&1 \
    | tee "artifacts/lane-$name.log" | sed -u "s/^/[$name] /"
  echo "${PIPESTATUS[0]}" >"artifacts/lane-$name.rc"
}
rm -f artifacts/lane-*.log artifacts/lane-*.rc
# Each lane's own temporary folder (its worlds' state: ~0.5-1.3 GB each), removed
# after a green run and kept after a red one. pytest's numbered folders would have
# several processes pruning one parent folder, and pruning others' old runs at exit (~15 s).
base=$(mktemp -d "${TMPDIR:-/tmp}/radcloud-tests-XXXXXX")
start=$SECONDS
# What the browser and jobs lanes run; rest runs every other folder (its --ignore list is
# made from these two, so a folder moved into a lane leaves rest by itself).
browser_paths=(tests/unit tests/e2e/browser tests/realfiles tests/load)
jobs_paths=(tests/e2e tests/fuzz tests/security tests/reliability)
rest_ignores=()
for path in "${browser_paths[@]}" "${jobs_paths[@]}"; do rest_ignores+=("--ignore=$path"); done
lanes=(browser jobs rest)
lane browser --basetemp="$base/browser" "${browser_paths[@]}" &
pids=($!)
lane jobs --basetemp="$base/jobs" --ignore=tests/e2e/browser "${jobs_paths[@]}" &
pids+=($!)
lane rest --basetemp="$base/rest" "${rest_ignores[@]}" &
pids+=($!)
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
wait "${pids[@]}"

status=0
echo
echo "== lanes, $((SECONDS - start)) s in all =="
for name in "${lanes[@]}"; do
  rc=$(cat "artifacts/lane-$name.rc" 2>/dev/null || echo 1)
  summary=$(tail -n 1 "artifacts/lane-$name.log")
  echo "[$name] exit $rc: $summary"
  if [ "$rc" = 5 ]; then
    collected_nothing "lane $name"; status=1
  elif [ "$rc" != 0 ]; then
    status=1
    echo "--- lane $name: failures and errors (whole log: artifacts/lane-$name.log) ---"
    sed -n '/short test summary info/,$p' "artifacts/lane-$name.log"
  fi
done
if [ $status = 0 ]; then
  rm -rf "$base"
else
  echo "the lanes' worlds (state folders, service logs) are kept in $base"
fi
exit $status
