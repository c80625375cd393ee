#!/usr/bin/env bash
# Install the Debian packages named as arguments when any is missing (make e2e-cluster's PostgreSQL, Redis
# and Chromium); only root can, so anyone else is told which packages to install.
set -euo pipefail
missing=()
for package in "$@"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$package")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "make e2e-cluster needs the Debian packages ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (as root, make e2e-cluster installs them itself)." >&2
  exit 1
fi
echo "Installing the Debian packages ${missing[*]} ..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
