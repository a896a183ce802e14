#!/usr/bin/env bash
# `make run`: release build, a Redis (the one at EVENTFLOW_REDIS_URL, or a local one with AOF),
# the three services in the background (logs and pids in .run/), then the Python demo.
# Services stay up afterwards; `make stop` (scripts/stop-local.sh) stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
mkdir -p "$RUN"

scripts/ensure-deps.sh venv
cargo build --release --bins
BIN=${CARGO_TARGET_DIR:-target}/release

# --- Redis: use a reachable one, else start ours (AOF on, data in .run/redis).
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
  mkdir -p "$RUN/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/$RUN/redis" \
    --appendonly yes --appendfsync everysec \
    --daemonize yes --pidfile "$PWD/$RUN/redis.pid" --logfile "$PWD/$RUN/redis.log"
  for _ in $(seq 100); do redis_up && break; sleep 0.1; done  # up to 10 s
  redis_up || { echo "run: local redis-server did not start; see $RUN/redis.log" >&2; exit 1; }
  echo "run: started redis-server on $REDIS_HOST:$REDIS_PORT (AOF in $RUN/redis)"
fi

# --- The services: restart any we started before, then wait until each is healthy.
declare -A GRPC=([publisher]=${EVENTFLOW_PUBLISHER_ADDR:-127.0.0.1:50051}
                 [subscriber]=${EVENTFLOW_SUBSCRIBER_ADDR:-127.0.0.1:50052}
                 [admin]=${EVENTFLOW_ADMIN_ADDR:-127.0.0.1:50053}
                 [dlq]=${EVENTFLOW_DLQ_ADDR:-127.0.0.1:50054})
declare -A METRICS=([publisher]=127.0.0.1:9091 [subscriber]=127.0.0.1:9092 [admin]=127.0.0.1:9093
                    [dlq]=127.0.0.1:9094)
declare -A NAME=([publisher]=PublisherService [subscriber]=SubscriberService [admin]=AdminService
                 [dlq]=DeadLetterService)
SERVICES=(publisher subscriber admin dlq)
scripts/stop-local.sh --services-only
for svc in "${SERVICES[@]}"; do
  nohup "$BIN/eventflow-$svc" --redis-url "$REDIS_URL" --grpc-addr "${GRPC[$svc]}" \
    --metrics-addr "${METRICS[$svc]}" --key-prefix "${EVENTFLOW_KEY_PREFIX:-ef}" \
    >"$RUN/$svc.log" 2>&1 </dev/null &
  echo $! >"$RUN/$svc.pid"
done
targets=()
for svc in "${SERVICES[@]}"; do targets+=("${GRPC[$svc]}=eventflow.v1.${NAME[$svc]}"); done
if ! .venv/bin/python examples/python/healthcheck.py --timeout 30 "${targets[@]}"; then
  for svc in "${SERVICES[@]}"; do echo "--- $RUN/$svc.log"; tail -n 20 "$RUN/$svc.log"; done >&2
  exit 1
fi

# --- The demo, then where everything is.
export EVENTFLOW_PUBLISHER_ADDR=${GRPC[publisher]} EVENTFLOW_SUBSCRIBER_ADDR=${GRPC[subscriber]} \
  EVENTFLOW_ADMIN_ADDR=${GRPC[admin]}
.venv/bin/python examples/python/demo.py

echo
echo "eventflow is running (Redis: $REDIS_URL):"
for svc in "${SERVICES[@]}"; do
  printf '  %-10s gRPC %-16s metrics http://%s/metrics  log %s  pid %s\n' \
    "$svc" "${GRPC[$svc]}" "${METRICS[$svc]}" "$RUN/$svc.log" "$(cat "$RUN/$svc.pid")"
done
[ ! -f "$RUN/redis.pid" ] || echo "  redis      $REDIS_HOST:$REDIS_PORT  log $RUN/redis.log  data $RUN/redis (AOF)"
echo "Stop everything with: make stop"
