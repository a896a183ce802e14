#!/usr/bin/env bash
# `make stop`: stops what scripts/run-local.sh started: every service of scripts/services.sh
# (the list run-local.sh starts) and the Redis it started, by the pids recorded in .run/*.pid
# ($EVENTFLOW_RUN_DIR), and its local PostgreSQL (scripts/local-pg.sh, by the pid file in
# .run/pg/data). Only a pid that still runs the program it was started as is signalled.
# --services-only leaves a Redis and a PostgreSQL that run-local.sh started running.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source scripts/local-pg.sh

names=("${SERVICES[@]}")
[ "${1:-}" = --services-only ] || names+=(redis)

for name in "${names[@]}"; do
  pidfile=$RUN_DIR/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if [ "$name" = redis ]; then program=redis-server; else program=eventflow-$name; fi
  if is_running "$pid" "$program"; then
    kill "$pid"
    for _ in $(seq 100); do is_running "$pid" "$program" || break; sleep 0.1; done  # up to 10 s
    if is_running "$pid" "$program"; then kill -9 "$pid"; fi
    echo "stop: stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
[ "${1:-}" = --services-only ] || local_pg_stop
