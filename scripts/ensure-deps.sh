#!/usr/bin/env bash
# Installs what the tests and `make run` need, only when missing:
#   redis  - redis-server (Debian package; installed with apt-get when root)
#   postgres - PostgreSQL server and client tools (initdb, postgres, psql, pg_isready), which
#            libs/testkit's PostgresServer starts per test (Debian package `postgresql`;
#            installed with apt-get when root)
#   nats   - nats-server, the JetStream peer of `make bench` (Debian package; installed with
#            apt-get when root)
#   venv   - .venv with examples/python/requirements.txt and deploy/tests/requirements.txt
#            (re-installed when either file changes)
#   node   - Node.js >= 18, npm and openssl (test certificates) for the Node client tests
#            (installed with apt-get when root)
# Usage: scripts/ensure-deps.sh [redis] [postgres] [nats] [venv] [node]
#        (no argument = redis, postgres, venv, node)
set -euo pipefail
cd "$(dirname "$0")/.."

# One run at a time per checkout: two at once (parallel tests running `make run` in a fresh
# clone) would both build .venv and break each other's. flock is in util-linux (every Debian).
if command -v flock >/dev/null; then
  exec 9>.ensure-deps.lock
  flock 9
fi

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(redis postgres venv node)

ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-deps: redis-server is missing: install it (Debian/Ubuntu: sudo apt-get install -y redis-server) and re-run" >&2
    exit 1
  fi
  echo "ensure-deps: installing redis-server with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

ensure_postgres() {
  # Debian installs the server binaries in /usr/lib/postgresql/<version>/bin, off PATH; the
  # harness looks there too. It needs setpriv (util-linux) to run them unprivileged when root.
  local server_ok=0
  if command -v initdb >/dev/null && command -v postgres >/dev/null; then
    server_ok=1
  else
    for bin in /usr/lib/postgresql/*/bin; do
      [ -x "$bin/initdb" ] && [ -x "$bin/postgres" ] && server_ok=1
    done
  fi
  [ "$server_ok" -eq 1 ] && command -v psql >/dev/null && command -v pg_isready >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-deps: PostgreSQL (initdb, postgres, psql, pg_isready) is missing: install it (Debian/Ubuntu: sudo apt-get install -y postgresql) and re-run" >&2
    exit 1
  fi
  echo "ensure-deps: installing postgresql with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

ensure_nats() {
  # Debian installs it in /usr/sbin, which a non-root PATH may lack.
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-deps: nats-server is missing: install it (Debian/Ubuntu: sudo apt-get install -y nats-server) and re-run" >&2
    exit 1
  fi
  echo "ensure-deps: installing nats-server with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
}

ensure_venv() {
  local reqs=(examples/python/requirements.txt deploy/tests/requirements.txt)
  local stamp=.venv/.requirements.sha256 python=${PYTHON:-python3} want_hash
  # The stamp holds the hash of the requirement files and of the interpreter version.
  want_hash="$( { cat "${reqs[@]}"; "$python" --version 2>&1; } | sha256sum | cut -d' ' -f1)"
  if [ -x .venv/bin/python ] && .venv/bin/python -c '' 2>/dev/null \
     && [ "$(cat "$stamp" 2>/dev/null)" = "$want_hash" ]; then
    return 0
  fi
  if ! command -v "$python" >/dev/null; then
    echo "ensure-deps: $python is missing: install Python >= 3.9 with venv and pip (or set PYTHON=/path/to/python3)" >&2
    exit 1
  fi
  echo "ensure-deps: creating .venv and installing ${reqs[*]}"
  rm -rf .venv
  if ! "$python" -m venv .venv; then
    rm -rf .venv
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      echo "ensure-deps: installing python3-venv with apt-get"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
    fi
    if ! "$python" -m venv .venv; then
      echo "ensure-deps: '$python -m venv' failed: install the venv module (Debian/Ubuntu: apt-get install -y python3-venv)" >&2
      exit 1
    fi
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-input "${reqs[@]/#/-r}"
  echo "$want_hash" > "$stamp"
}

ensure_node() {
  node_ok() {
    local major
    major="$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')"
    [ -n "$major" ] && [ "$major" -ge 18 ] && command -v npm >/dev/null
  }
  node_ok && command -v openssl >/dev/null && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "ensure-deps: installing nodejs, npm and openssl with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm openssl >/dev/null
    node_ok && command -v openssl >/dev/null && return 0
  fi
  echo "ensure-deps: Node.js >= 18 with npm, or openssl, is missing: install them (Debian/Ubuntu: apt-get install -y nodejs npm openssl) and re-run" >&2
  exit 1
}

for w in "${want[@]}"; do
  case "$w" in
    redis) ensure_redis ;;
    postgres) ensure_postgres ;;
    nats) ensure_nats ;;
    venv) ensure_venv ;;
    node) ensure_node ;;
    *) echo "ensure-deps: unknown dependency '$w' (expected: redis, postgres, nats, venv, node)" >&2; exit 2 ;;
  esac
done
