#!/usr/bin/env bash
# Installs the npm packages the tests drive (each test folder with a
# package.json), the web viewer's (webui/vendor: dwv, bundled into
# webui/static/vendor/ by its build.mjs) and OHIF for the stack's Orthanc
# (deploy/ohif: @ohif/app's static build, put in deploy/ohif/build/ by its
# build.mjs), from their lock files, before tests run without network.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in tests/js tests/e2e/browser webui/vendor deploy/ohif; do
  [ -f "$dir/package.json" ] || continue
  # npm records what it installed in node_modules/.package-lock.json: when
  # that is newer than the lock file, the install is current (saves ~8 s).
  if [ -f "$dir/package-lock.json" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    continue
  fi
  if [ -f "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  else
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  fi
done
# The viewer's bundle (gitignored): rebuilt when the lock file or the build script is newer.
if [ ! -f webui/static/vendor/dwv/modules.json ] || [ webui/vendor/package-lock.json -nt webui/static/vendor/dwv/modules.json ] \
   || [ webui/vendor/build.mjs -nt webui/static/vendor/dwv/modules.json ]; then
  (cd webui/vendor && node build.mjs >/dev/null)
fi
# OHIF for Orthanc (gitignored; hard links to node_modules but for the files it rewrites): rebuilt
# when the lock file, the build script or radcloud's app-config.js is newer.
ohif=deploy/ohif
if [ ! -f $ohif/build/routes.json ] || [ $ohif/package-lock.json -nt $ohif/build/routes.json ] \
   || [ $ohif/build.mjs -nt $ohif/build/routes.json ] || [ $ohif/app-config.js -nt $ohif/build/routes.json ]; then
  (cd $ohif && node build.mjs >/dev/null)
fi
