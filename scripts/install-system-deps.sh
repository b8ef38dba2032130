#!/usr/bin/env bash
# Installs the Debian packages radcloud's stack and tests need, when missing.
# Runs apt only as root; otherwise prints the exact command and fails.
set -euo pipefail
# slurm-wlm, munge, slurmrestd and its JWT plugin: the one-node cluster of `stack up --with-slurm`.
packages=(orthanc orthanc-dicomweb orthanc-gdcm dcmtk dicom3tools redis-server bubblewrap openssl iproute2 util-linux nodejs npm chromium
          slurm-wlm munge slurmrestd slurm-wlm-jwt-plugin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (e.g. NodeSource): accept working binaries.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]}"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "error: missing Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
