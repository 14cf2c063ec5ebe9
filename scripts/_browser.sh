# Sourced by scripts/test: make sure a Chromium is there for tests/browser (the dashboard test).
# Cheap when one is: Playwright's own download, a system chromium, or $ADRIZZLE_CHROMIUM.
# Otherwise install one: Debian's package when we are root with apt-get (Playwright's download
# site may be out of reach), else `playwright install chromium`. Failing both is not fatal:
# the browser test then skips and says why.

have_chromium() {
  [ -n "${ADRIZZLE_CHROMIUM:-}" ] && return 0
  compgen -G "${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}/chromium-*" >/dev/null && return 0
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
    command -v google-chrome >/dev/null 2>&1
}

ensure_chromium() {
  have_chromium && return 0
  local log
  log=$(mktemp)
  echo "== installing Chromium for the browser test (once; log: $log)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Other checkouts may run apt at the same time: wait for the lock instead of failing.
    if apt-get -o DPkg::Lock::Timeout=300 update -q >"$log" 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q chromium \
         >>"$log" 2>&1; then
      return 0
    fi
  fi
  if .venv/bin/python -m playwright install chromium >>"$log" 2>&1; then
    return 0
  fi
  echo "   no Chromium could be installed (see $log): tests/browser will be skipped" >&2
}
