#!/usr/bin/env bash
# `make stop`: stops what scripts/run-local.sh started, by the pids it recorded in .run/*.pid.
# --services-only leaves a Redis that run-local.sh started running.
set -euo pipefail
cd "$(dirname "$0")/.."

names=(publisher subscriber admin)
[ "${1:-}" = --services-only ] || names+=(redis)

for name in "${names[@]}"; do
  pidfile=.run/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # Only signal the pid if it still is the process we started (pids get reused).
  if [ "$name" = redis ]; then expect=redis-server; else expect=eventflow-$name; fi
  if kill -0 "$pid" 2>/dev/null && grep -qa -- "$expect" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # up to 10 s
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    echo "stop: stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
