#!/usr/bin/env bash
# Runs every benchmark in bench/ (each prints its figures and ratios against
# the baseline it measures in the same run). Not part of `make test`.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for b in bench/*_bench.py; do
  echo "== $b"
  .venv/bin/python "$b" || status=1
done
exit $status
