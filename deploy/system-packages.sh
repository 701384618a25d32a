#!/usr/bin/env bash
# The Debian packages the test suite drives: chromium (the web UI's browser tests, through
# Playwright's library, no browser download), tmux (the TUI's real-terminal test), and
# promtool (Prometheus's rule and config checker: tests/test_monitoring_files.py).
# Installs only what is missing; needs root or sudo when something is.
set -euo pipefail
PACKAGES=(chromium tmux)
as_root=()
[ "$(id -u)" -ne 0 ] && as_root=(sudo)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=0
if [ ${#missing[@]} -gt 0 ]; then
  echo "system-packages: installing ${missing[*]}" >&2
  "${as_root[@]}" apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# promtool alone, out of Debian's prometheus package: installing the package would bring the
# server and ~220 MB of web-UI JavaScript dependencies (318 MB in all, measured); the one
# binary is 48 MB from a 19 MB download
if ! command -v promtool >/dev/null; then
  echo "system-packages: installing promtool (from Debian's prometheus package)" >&2
  [ "$updated" -eq 1 ] || "${as_root[@]}" apt-get update -qq
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's download sandbox user writes here
  (cd "$tmp" && apt-get download -qq prometheus)
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >"$tmp/promtool"
  "${as_root[@]}" install -m 0755 "$tmp/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi
