#!/usr/bin/env bash
# Installs the npm packages the tests drive (each test folder with a
# package.json), from their lock files, before tests run without network.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in tests/js tests/e2e/browser; do
  [ -f "$dir/package.json" ] || continue
  if [ -f "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  else
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  fi
done
