#!/usr/bin/env bash
# The Debian packages the test suite drives: chromium (the web UI's browser tests, through
# Playwright's library, no browser download) and tmux (the TUI's real-terminal test).
# Installs only what is missing; needs root or sudo when something is.
set -euo pipefail
PACKAGES=(chromium tmux)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
as_root=()
[ "$(id -u)" -ne 0 ] && as_root=(sudo)
echo "system-packages: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
