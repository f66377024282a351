#!/usr/bin/env bash
# Runs a three-node webhookd cluster on this machine: node1..node3 on 127.0.0.1..127.0.0.3,
# HTTP on port 8081 and cluster traffic on port 7081 of each address.
#
#   deploy/local-cluster.sh start    build once (release), start the three nodes in the background
#   deploy/local-cluster.sh status   show each node's process and /ready answer
#   deploy/local-cluster.sh stop     stop the nodes (SIGTERM, then wait for them to exit)
#
# Logs go to deploy/local/logs/nodeN.log, pid files to deploy/local/run/nodeN.pid, data to
# ./data/nodeN (relative to the repository root). The cluster cookie is generated on the
# first start and kept in deploy/local/run/cookie.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
run_dir="deploy/local/run"
log_dir="deploy/local/logs"
bin="target/release/webhookd"
nodes=(1 2 3)

pid_of() { cat "$run_dir/node$1.pid" 2>/dev/null || true; }
alive() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start() {
  echo "building (cargo build --release; the first build takes several minutes)..."
  cargo build --release
  mkdir -p "$run_dir" "$log_dir"
  # Remember where each log ends, to show only what this start printed.
  declare -A log_lines
  for n in "${nodes[@]}"; do
    log_lines[$n]=$(wc -l < "$log_dir/node$n.log" 2>/dev/null || echo 0)
  done
  if [ ! -s "$run_dir/cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$run_dir/cookie"
  fi
  local cookie; cookie="$(cat "$run_dir/cookie")"
  for n in "${nodes[@]}"; do
    if alive "$n"; then
      echo "node$n already running (pid $(pid_of "$n"))"
      continue
    fi
    WEBHOOKD_CLUSTER__COOKIE="$cookie" nohup "$bin" serve --config "deploy/local/node$n.toml" \
      >>"$log_dir/node$n.log" 2>&1 </dev/null &
    echo $! > "$run_dir/node$n.pid"
    echo "node$n started (pid $!), http://127.0.0.$n:8081, log $log_dir/node$n.log"
  done
  # Wait (bounded) until every node answers /ready, then show the admin keys if this was
  # the first start.
  for _ in $(seq 1 50); do
    local ready=0
    for n in "${nodes[@]}"; do
      curl -fs "http://127.0.0.$n:8081/ready" >/dev/null 2>&1 && ready=$((ready + 1))
    done
    [ "$ready" -eq "${#nodes[@]}" ] && break
    sleep 0.2
  done
  status
  local keys=""
  for n in "${nodes[@]}"; do
    keys+="$(tail -n +"$((log_lines[$n] + 1))" "$log_dir/node$n.log" 2>/dev/null | grep "^admin " || true)"
  done
  if [ -n "$keys" ]; then
    echo
    echo "Admin account created. Record these keys now: they are never shown again."
    echo "$keys"
  fi
}

status() {
  for n in "${nodes[@]}"; do
    if alive "$n"; then
      local ready
      ready="$(curl -s --max-time 2 "http://127.0.0.$n:8081/ready" || echo 'no answer')"
      echo "node$n running (pid $(pid_of "$n")): $ready"
    else
      echo "node$n stopped"
    fi
  done
}

stop() {
  for n in "${nodes[@]}"; do
    if alive "$n"; then
      kill -TERM "$(pid_of "$n")"
    fi
  done
  for n in "${nodes[@]}"; do
    for _ in $(seq 1 100); do
      alive "$n" || break
      sleep 0.1
    done
    if alive "$n"; then
      echo "node$n did not stop in time; killing it"
      kill -KILL "$(pid_of "$n")" || true
    fi
    rm -f "$run_dir/node$n.pid"
    echo "node$n stopped"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
