#!/bin/sh
# Finds a headless browser for `make test`'s console tests (tests/test_e2e_console.py,
# selenium driving Chromium through chromedriver):
#   1. `chromium` (or chromium-browser, google-chrome) and `chromedriver` on PATH, or
#      $CHROMIUM and $CHROMEDRIVER: used as they are;
#   2. else, as root with apt-get (Debian, Ubuntu, the CI image): installs Debian's
#      `chromium` and `chromium-driver` packages, saying so first;
#   3. else fails, saying how to get them (the browser tests then fail too: they never skip).
# Prints the path of chromedriver on standard output; everything else goes to standard error.
set -eu

browser() {
    if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then echo "$CHROMIUM"; return 0; fi
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" 2>/dev/null; then return 0; fi
    done
    return 1
}

driver() {
    if [ -n "${CHROMEDRIVER:-}" ] && [ -x "$CHROMEDRIVER" ]; then echo "$CHROMEDRIVER"; return 0; fi
    command -v chromedriver 2>/dev/null || { [ -x /usr/lib/chromium/chromedriver ] && echo /usr/lib/chromium/chromedriver; }
}

if b=$(browser) && d=$(driver); then
    echo "browser: $b, driver: $d" >&2
    echo "$d"
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium or chromedriver not found: installing Debian's chromium and chromium-driver packages (apt-get update; apt-get install -y chromium chromium-driver)" >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver >&2
    if b=$(browser) && d=$(driver); then
        echo "browser: $b, driver: $d" >&2
        echo "$d"
        exit 0
    fi
fi
cat >&2 <<'MSG'
chromium and chromedriver not found, and they cannot be installed here (needs root and apt-get).
The console's browser tests (tests/test_e2e_console.py) need them. Install them, then run make test again:
  sudo apt-get install chromium chromium-driver      (Debian/Ubuntu)
  brew install --cask chromium chromedriver           (macOS)
  or set CHROMIUM=/path/to/chrome and CHROMEDRIVER=/path/to/chromedriver
MSG
exit 1
