#!/usr/bin/env bash
# The Debian packages the test suite drives: chromium (the web UI's browser tests, through
# Playwright's library, no browser download), tmux (the TUI's real-terminal test), and
# promtool (Prometheus's rule and config checker: tests/test_monitoring_files.py), and nginx
# with its njs module (the inference router's HTTP data plane).
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
# nginx and its njs module alone, out of Debian's packages: installing them would also start
# an nginx service on port 80; the router runs its own, with its own configuration
if [ ! -x /usr/local/sbin/nginx ] || [ ! -f /usr/local/lib/nginx/modules/ngx_http_js_module.so ]; then
  echo "system-packages: installing nginx and its njs module (from Debian's packages)" >&2
  [ "$updated" -eq 1 ] || "${as_root[@]}" apt-get update -qq
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && apt-get download -qq nginx libnginx-mod-http-js)
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
  "${as_root[@]}" install -D -m 0755 "$tmp/root/usr/sbin/nginx" /usr/local/sbin/nginx
  "${as_root[@]}" install -D -m 0644 "$tmp/root/usr/lib/nginx/modules/ngx_http_js_module.so" \
    /usr/local/lib/nginx/modules/ngx_http_js_module.so
  rm -rf "$tmp"
fi
