#!/bin/sh
# Finds promtool (Prometheus's rule checker) for `make test`, which checks and unit-tests
# deploy/prometheus/alerts.yml with it (tests/test_monitoring.py):
#   1. `promtool` on PATH (or $PROMTOOL): used as it is;
#   2. else, as root with apt-get (Debian, Ubuntu, the CI image): installs Debian's
#      `prometheus` package, which ships /usr/bin/promtool, saying so first;
#   3. else fails, saying how to get it.
# Prints the path of promtool on standard output; everything else goes to standard error.
set -eu

found() {
    if [ -n "${PROMTOOL:-}" ] && [ -x "$PROMTOOL" ]; then echo "$PROMTOOL"; return 0; fi
    command -v promtool 2>/dev/null
}

if path=$(found); then
    echo "$path"
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "promtool not found: installing Debian's prometheus package (apt-get update; apt-get install -y --no-install-recommends prometheus)" >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >&2
    if path=$(found); then
        echo "$path"
        exit 0
    fi
fi
cat >&2 <<'MSG'
promtool not found, and it cannot be installed here (needs root and apt-get).
Install it, then run make test again, with one of:
  sudo apt-get install prometheus            (Debian/Ubuntu: /usr/bin/promtool)
  brew install prometheus                    (macOS)
  a release from https://prometheus.io/download/ on PATH, or PROMTOOL=/path/to/promtool
MSG
exit 1
