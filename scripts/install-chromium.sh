#!/usr/bin/env bash
# Installs Debian's `chromium` package when /usr/bin/chromium is missing: the dashboard's browser
# test (examples/tests/dashboard.rs) drives it headless and fails, never skips, without it.
# Idempotent; uses only the machine's configured Debian package registry, as root or with sudo.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

echo "install-chromium: installing Debian's chromium package" >&2
# Another apt run on the machine holds the lock for a while: wait for it rather than fail.
sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
sudo_ env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version >&2
