#!/usr/bin/env bash
# `make run`: release build, a Redis (the one at EVENTFLOW_REDIS_URL, or a local one with AOF),
# every service of scripts/services.sh in the background (logs and pid files in .run/), then the
# Python demo. Services stay up afterwards; `make stop` (scripts/stop-local.sh) stops them.
#
# It reports healthy only processes it started itself: services an earlier `make run` started
# (by their pid files) are stopped first; a port still held after that belongs to someone else
# (e.g. a process left over from an older run) and makes it fail with one line. Each started
# process must hold its own ports before its health is checked.
#
# The outbox relay and the archive use the PostgreSQL EVENTFLOW_DATABASE_URL names; without it,
# a local one in $RUN_DIR/pg (scripts/local-pg.sh: initdb'd once, on a free port of 127.0.0.1,
# never the machine's own). Both apply their schema themselves. The demo then also shows the
# outbox (a row inserted in a transaction, published by the relay, consumed) and an archive query.
#
# Environment: EVENTFLOW_REDIS_URL, EVENTFLOW_KEY_PREFIX, EVENTFLOW_DATABASE_URL, EVENTFLOW_<NAME>_ADDR and
# EVENTFLOW_<NAME>_METRICS_ADDR (scripts/services.sh), EVENTFLOW_RUN_DIR (default .run),
# EVENTFLOW_BIN_DIR (run the binaries in that directory instead of building release ones).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source scripts/local-pg.sh
mkdir -p "$RUN_DIR"

scripts/ensure-deps.sh venv
if [ -n "${EVENTFLOW_BIN_DIR:-}" ]; then
  BIN=$EVENTFLOW_BIN_DIR
else
  cargo build --release --bins
  BIN=${CARGO_TARGET_DIR:-target}/release
fi

# --- Redis: use a reachable one, else start ours (AOF on, data in $RUN_DIR/redis).
REDIS_URL=${EVENTFLOW_REDIS_URL:-redis://127.0.0.1:6379}
hostport=${REDIS_URL#*://}; hostport=${hostport##*@}; hostport=${hostport%%/*}
REDIS_HOST=${hostport%:*}; REDIS_PORT=${hostport##*:}
[ "$REDIS_PORT" != "$hostport" ] || REDIS_PORT=6379
# Up = something answers PING with a RESP reply (+PONG, or -NOAUTH when it wants a password).
redis_up() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && [[ "$(head -c1 <&3)" == [+-] ]]' \
    _ "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null
}
if redis_up; then
  echo "run: using the Redis at $REDIS_URL"
else
  case "$REDIS_HOST" in 127.0.0.1|localhost) ;; *) echo "run: no Redis answers at $REDIS_URL" >&2; exit 1 ;; esac
  scripts/ensure-deps.sh redis
  mkdir -p "$RUN_DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR/redis" \
    --appendonly yes --appendfsync everysec --lazyfree-lazy-expire yes \
    --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log"
  for _ in $(seq 100); do redis_up && break; sleep 0.1; done  # up to 10 s
  redis_up || { echo "run: local redis-server did not start; see $RUN_DIR/redis.log" >&2; exit 1; }
  echo "run: started redis-server on $REDIS_HOST:$REDIS_PORT (AOF in $RUN_DIR/redis)"
fi

# --- The services: stop those an earlier run started, refuse ports someone else holds, start
# each, wait until each holds its ports, then until each is healthy.
scripts/stop-local.sh --services-only

# Whether something accepts connections on ADDR.
port_taken() {
  local host=${1%:*} port=${1##*:}
  [ "$host" != 0.0.0.0 ] || host=127.0.0.1
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}
# " (pid N, program)" of the process listening on ADDR's port, when ss can tell (same user).
holder() {
  command -v ss >/dev/null || return 0
  ss -Hltnp "sport = :${1##*:}" 2>/dev/null \
    | sed -nE '1s/.*users:\(\("([^"]+)",pid=([0-9]+).*/ (pid \2, \1)/p'
}
for svc in "${SERVICES[@]}"; do
  for addr in "${GRPC[$svc]}" "${METRICS[$svc]}"; do
    if port_taken "$addr"; then
      echo "run: $svc: $addr is held by a process \`make run\` did not start$(holder "$addr"); stop it and run again" >&2
      exit 1
    fi
  done
done

# --- PostgreSQL for the relay and the archive: the one EVENTFLOW_DATABASE_URL names, else ours.
if [ -n "${EVENTFLOW_DATABASE_URL:-}" ]; then
  echo "run: using the PostgreSQL of EVENTFLOW_DATABASE_URL"
else
  scripts/ensure-deps.sh postgres
  local_pg_start || exit 1
  export EVENTFLOW_DATABASE_URL=$LOCAL_PG_URL
fi

# Why a service exited at start: its one-line error (clap's `error: ...`, or `eventflow-<name>: ...`
# after any JSON log lines), else the last line of its log.
start_error() {
  grep -E '^(error: |eventflow-[a-z-]+: )' "$1" | tail -n 1 | grep . || tail -n 1 "$1"
}
# On a failure from here on: one line saying why, then stop what this run started.
fail() {
  echo "run: $*" >&2
  scripts/stop-local.sh --services-only >/dev/null
  exit 1
}

for svc in "${SERVICES[@]}"; do
  nohup "$BIN/eventflow-$svc" --redis-url "$REDIS_URL" --grpc-addr "${GRPC[$svc]}" \
    --metrics-addr "${METRICS[$svc]}" --key-prefix "${EVENTFLOW_KEY_PREFIX:-ef}" \
    >"$RUN_DIR/$svc.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$svc.pid"
done
for svc in "${SERVICES[@]}"; do
  pid=$(cat "$RUN_DIR/$svc.pid")
  for _ in $(seq 300); do  # up to 30 s
    listens "$pid" "${GRPC[$svc]}" && listens "$pid" "${METRICS[$svc]}" && break
    starting "$pid" "eventflow-$svc" || break  # not yet exec'd counts as starting
    sleep 0.1
  done
  if ! is_running "$pid" "eventflow-$svc"; then
    fail "eventflow-$svc exited at start: $(start_error "$RUN_DIR/$svc.log")"
  fi
  if ! { listens "$pid" "${GRPC[$svc]}" && listens "$pid" "${METRICS[$svc]}"; }; then
    fail "eventflow-$svc (pid $pid) does not listen on ${GRPC[$svc]} and ${METRICS[$svc]}; see $RUN_DIR/$svc.log"
  fi
done
targets=()
for svc in "${SERVICES[@]}"; do targets+=("${GRPC[$svc]}=${HEALTH[$svc]}"); done
if ! .venv/bin/python examples/python/healthcheck.py --timeout 30 "${targets[@]}"; then
  for svc in "${SERVICES[@]}"; do echo "--- $RUN_DIR/$svc.log"; tail -n 20 "$RUN_DIR/$svc.log"; done >&2
  fail "not every service became healthy; their logs are above"
fi

# --- The demo, then where everything is.
export EVENTFLOW_PUBLISHER_ADDR=${GRPC[publisher]} EVENTFLOW_SUBSCRIBER_ADDR=${GRPC[subscriber]} \
  EVENTFLOW_ADMIN_ADDR=${GRPC[admin]} EVENTFLOW_ARCHIVE_ADDR=${GRPC[archive]}
.venv/bin/python examples/python/demo.py

echo
echo "eventflow is running (Redis: $REDIS_URL):"
for svc in "${SERVICES[@]}"; do
  printf '  %-10s gRPC %-16s metrics http://%s/metrics  log %s  pid %s\n' \
    "$svc" "${GRPC[$svc]}" "${METRICS[$svc]}" "$RUN_DIR/$svc.log" "$(cat "$RUN_DIR/$svc.pid")"
done
[ ! -f "$RUN_DIR/redis.pid" ] || echo "  redis      $REDIS_HOST:$REDIS_PORT  log $RUN_DIR/redis.log  data $RUN_DIR/redis (AOF)"
[ -z "${LOCAL_PG_URL:-}" ] \
  || echo "  postgres   $LOCAL_PG_URL  log $PG_DIR/postgres.log  data $PG_DIR/data  pid $LOCAL_PG_PID"
echo "Stop everything with: make stop"
