# shellcheck shell=bash
# The local PostgreSQL of `make run` (scripts/run-local.sh starts it, scripts/stop-local.sh stops
# it), used when EVENTFLOW_DATABASE_URL names none: a cluster initdb'd once into $RUN_DIR/pg
# (gitignored .run/pg), started with pg_ctl on a free port of 127.0.0.1 with trust
# authentication, no Unix socket (so it never meets a system socket in /var/run/postgresql)
# and its own data directory, so a PostgreSQL already running on the machine is never touched.
# Its data stays across runs; `make stop` stops it (fast shutdown); `rm -rf .run/pg` drops it.
# Like libs/testkit's PostgresServer: as root, initdb and pg_ctl run as the unprivileged
# `postgres` user through setpriv (PostgreSQL refuses root), created with useradd when missing.
#
# Source it after scripts/services.sh (it needs RUN_DIR). It defines:
#   PG_DIR              $RUN_DIR/pg: data/, port, postgres.log
#   local_pg_start      starts it (or finds it running) and sets LOCAL_PG_URL and LOCAL_PG_PID
#   local_pg_stop       stops it if it runs; prints one line when it stopped it
#   local_pg_running    whether it runs (its pid file names a live postgres)

PG_DIR=$RUN_DIR/pg

# pg_bin NAME: the PostgreSQL program NAME, on PATH or in the newest /usr/lib/postgresql/*/bin.
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/$1" ]; then echo "$dir/$1"; else command -v "$1"; fi
}

# as_pg_user CMD...: runs CMD as the user owning the data directory (postgres when root).
as_pg_user() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

# The postmaster's pid, from its pid file (empty when there is none).
local_pg_pid() {
  head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true
}

local_pg_running() {
  local pid
  pid=$(local_pg_pid)
  [ -n "$pid" ] && is_running "$pid" postgres
}

# local_pg_free_port: a port of 127.0.0.1 nothing listens on (bound and released at once).
local_pg_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

local_pg_start() {
  if ! local_pg_running; then
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
      rm -rf "$PG_DIR"
      mkdir -p "$PG_DIR"
      if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home --user-group postgres
        chown -R postgres:postgres "$PG_DIR"
        if ! as_pg_user test -w "$PG_DIR"; then
          echo "run: the postgres user cannot write $PG_DIR (a parent directory is closed to it); set EVENTFLOW_DATABASE_URL or EVENTFLOW_RUN_DIR" >&2
          return 1
        fi
      fi
      if ! as_pg_user "$(pg_bin initdb)" -D "$PG_DIR/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C >"$PG_DIR/initdb.log" 2>&1; then
        echo "run: initdb failed; see $PG_DIR/initdb.log" >&2
        return 1
      fi
      # Loopback TCP only, no Unix socket; trust is initdb's rule for local connections.
      printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" >>"$PG_DIR/data/postgresql.conf"
    fi
    local attempt port started=0
    for attempt in 1 2 3; do # a free port may be taken before postgres binds it: pick another
      port=$(local_pg_free_port)
      echo "$port" >"$PG_DIR/port"
      if as_pg_user "$(pg_bin pg_ctl)" start -w -t 30 -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" \
        -o "-p $port" >/dev/null 2>&1; then
        started=1
        break
      fi
      echo "run: postgres did not start on port $port (attempt $attempt); see $PG_DIR/postgres.log" >&2
    done
    [ "$started" -eq 1 ] || return 1
    echo "run: started postgres on 127.0.0.1:$port (data in $PG_DIR/data)"
  else
    echo "run: using the postgres an earlier run started on 127.0.0.1:$(cat "$PG_DIR/port")"
  fi
  LOCAL_PG_URL="postgres://postgres@127.0.0.1:$(cat "$PG_DIR/port")/postgres"
  LOCAL_PG_PID=$(local_pg_pid)
}

local_pg_stop() {
  local_pg_running || return 0
  local pid
  pid=$(local_pg_pid)
  as_pg_user "$(pg_bin pg_ctl)" stop -w -t 30 -m fast -D "$PG_DIR/data" >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null || true
  # pg_ctl -w returns once the pid file is gone; the postmaster exits a moment later: wait
  # (up to 10 s) so "stopped" is true when it is said.
  local waited=0
  while tr -d '\0' <"/proc/$pid/cmdline" 2>/dev/null | grep -q postgres && [ "$waited" -lt 100 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  echo "stop: stopped postgres (pid $pid)"
}
