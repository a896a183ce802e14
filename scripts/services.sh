# shellcheck shell=bash
# The services `make run` starts (all of them: the relay and the archive use
# EVENTFLOW_DATABASE_URL, else the local PostgreSQL of scripts/local-pg.sh) and `make stop`
# stops: the one list both scripts source
# (scripts/run-local.sh, scripts/stop-local.sh), so a service cannot be started and then forgotten.
# tests/e2e/tests/local_run.rs checks that it names every service binary of the workspace
# (`eventflow-<name>` built from services/<name>).
#
# Sourcing it (after `cd` to the repository root) defines:
#   SERVICES          the service names, in start order
#   GRPC[name]        its gRPC address: $EVENTFLOW_<NAME>_ADDR, else the default below
#   METRICS[name]     its /metrics address: $EVENTFLOW_<NAME>_METRICS_ADDR, else the default below
#   HEALTH[name]      the grpc.health.v1 service name it reports
#   RUN_DIR           where logs and pid files go: $EVENTFLOW_RUN_DIR, else .run (absolute path)
# and the helpers is_running and listens below.

SERVICES=()
declare -A GRPC=() METRICS=() HEALTH=()

# service NAME GRPC_ADDR METRICS_ADDR HEALTH_NAME: adds one service to the list.
service() {
  local var=EVENTFLOW_${1^^}
  var=${var//-/_}
  local grpc_var=${var}_ADDR metrics_var=${var}_METRICS_ADDR
  SERVICES+=("$1")
  GRPC[$1]=${!grpc_var:-$2}
  METRICS[$1]=${!metrics_var:-$3}
  HEALTH[$1]=$4
}

#       name        gRPC             metrics         health service name
service publisher   127.0.0.1:50051  127.0.0.1:9091  eventflow.v1.PublisherService
service subscriber  127.0.0.1:50052  127.0.0.1:9092  eventflow.v1.SubscriberService
service admin       127.0.0.1:50053  127.0.0.1:9093  eventflow.v1.AdminService
service dlq         127.0.0.1:50054  127.0.0.1:9094  eventflow.v1.DeadLetterService
service pusher      127.0.0.1:50057  127.0.0.1:9097  eventflow-pusher
service archive     127.0.0.1:50055  127.0.0.1:9095  eventflow.v1.ArchiveService
service relay       127.0.0.1:50056  127.0.0.1:9096  eventflow-relay

RUN_DIR=${EVENTFLOW_RUN_DIR:-.run}
[[ $RUN_DIR == /* ]] || RUN_DIR=$PWD/$RUN_DIR

# is_running PID PROGRAM: whether PID is alive and still runs PROGRAM (pids get reused). A zombie
# has an empty cmdline, so a process that exited but was not reaped yet counts as stopped.
is_running() {
  kill -0 "$1" 2>/dev/null && grep -qa -- "$2" "/proc/$1/cmdline" 2>/dev/null
}

# starting PID PROGRAM: whether PID, a child this shell just started in the background, runs
# PROGRAM or has not reached its exec yet (until then its cmdline is still this shell's).
starting() {
  is_running "$1" "$2" && return 0
  kill -0 "$1" 2>/dev/null && [ "$(tr -d '\0' <"/proc/$1/cmdline" 2>/dev/null)" = "$(tr -d '\0' <"/proc/$$/cmdline")" ]
}

# listens PID ADDR: whether process PID holds a listening TCP socket on the port of ADDR, read
# from /proc (Linux): the socket inodes listening on the port, among the process's open files.
listens() {
  local pid=$1 port=${2##*:} inode fds
  [ -r /proc/net/tcp ] || return 0 # no /proc: the port checks before the start have to do
  fds=$(ls -l "/proc/$pid/fd" 2>/dev/null) || return 1
  for inode in $(awk -v port="$(printf ':%04X' "$port")" \
    '$4 == "0A" && substr($2, length($2) - 4) == port { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    [[ $fds == *"socket:[$inode]"* ]] && return 0
  done
  return 1
}
