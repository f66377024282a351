#!/usr/bin/env bash
# Runs a three-node webhookd cluster on this machine: node1..node3 on 127.0.0.1..127.0.0.3,
# HTTP on port 8081 and cluster traffic on port 7081 of each address. The nodes replicate
# every shard group on all three (cluster.replication_factor = 3 in deploy/local/).
#
#   deploy/local-cluster.sh start    build (cargo build --release), start the stopped nodes,
#                                    wait until they are ready and every group has a leader
#   deploy/local-cluster.sh status   show each node's process and /ready answer, and which
#                                    node leads each group (GET /v1/cluster)
#   deploy/local-cluster.sh stop     stop the nodes (SIGTERM, then wait for them to exit)
#
# Everything the cluster writes goes under deploy/local/run (git-ignored; set
# LOCAL_CLUSTER_DIR to use another directory): nodeN/ is node N's storage, nodeN.log its
# stdout and stderr, nodeN.pid its pid, cookie the cluster cookie generated on the first
# start. The binary is the one cargo builds: $CARGO_TARGET_DIR/release/webhookd when
# CARGO_TARGET_DIR is set, else target/release/webhookd.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
state="${LOCAL_CLUSTER_DIR:-deploy/local/run}"
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release/webhookd"
nodes=(1 2 3)

pid_of() { cat "$state/node$1.pid" 2>/dev/null || true; }
alive() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
log_lines() { if [ -f "$state/node$1.log" ]; then wc -l < "$state/node$1.log"; else echo 0; fi; }
any_alive() { local n; for n in "${nodes[@]}"; do alive "$n" && return 0; done; return 1; }

# The admin api_key, from the line its node printed on the cluster's first start.
admin_key() {
  cat "$state"/node*.log 2>/dev/null | sed -n 's/^admin api_key: //p' | tail -n 1
}

# GET /v1/cluster, as admin, from the first running node that answers it.
cluster_state() {
  local key n; key="$(admin_key)"
  [ -n "$key" ] || return 1
  for n in "${nodes[@]}"; do
    alive "$n" || continue
    curl -fs --max-time 2 "http://127.0.0.$n:8081/v1/cluster" -H "content-type: application/json" \
      -H "username: admin" -H "api-key: $key" && return 0
  done
  return 1
}

# "group leader" lines (leader "-" when the group has none) of a GET /v1/cluster answer,
# read from its replication.groups; none when the cluster is not replicated.
group_leaders() {
  { grep -o '"group":"[^"]*"\|"leader":\(null\|"[^"]*"\)' || true; } | sed 's/^"[a-z]*"://; s/"//g' \
    | paste -d ' ' - - | sed 's/ null$/ -/'
}

start() {
  echo "building $bin (cargo build --release; the first build takes several minutes)..."
  cargo build --release
  mkdir -p "$state"
  # Remember where each log ends, to find what this start printed.
  declare -A seen
  local fresh=1
  for n in "${nodes[@]}"; do
    seen[$n]="$(log_lines "$n")"
    [ -e "$state/node$n" ] && fresh=0
  done
  if [ ! -s "$state/cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/cookie"
  fi
  local cookie; cookie="$(cat "$state/cookie")"
  local started=()
  for n in "${nodes[@]}"; do
    if alive "$n"; then
      echo "node$n already running (pid $(pid_of "$n"))"
      continue
    fi
    WEBHOOKD_CLUSTER__COOKIE="$cookie" WEBHOOKD_STORAGE__PATH="$state/node$n" \
      nohup "$bin" serve --config "deploy/local/node$n.toml" \
      >>"$state/node$n.log" 2>&1 </dev/null &
    echo $! > "$state/node$n.pid"
    started+=("$n")
    echo "node$n started (pid $!), http://127.0.0.$n:8081, log $state/node$n.log"
  done
  # Wait (at most 10 s) until every node answers /ready or has exited.
  for _ in $(seq 1 50); do
    local waiting=0
    for n in "${nodes[@]}"; do
      if alive "$n" && ! curl -fs --max-time 1 "http://127.0.0.$n:8081/ready" >/dev/null 2>&1; then
        waiting=$((waiting + 1))
      fi
    done
    [ "$waiting" -eq 0 ] && break
    sleep 0.2
  done
  # Then (at most 30 s) until every replicated group has a leader. The admin key, needed to
  # ask, is printed once the metadata group has one: wait for it on a new cluster only.
  local leaders
  for _ in $(seq 1 150); do
    any_alive || break
    if [ -z "$(admin_key)" ]; then
      [ "$fresh" -eq 1 ] || break
    elif leaders="$(cluster_state | group_leaders)" && ! grep -q ' -$' <<<"$leaders"; then
      break
    fi
    sleep 0.2
  done
  status
  local keys=""
  for n in "${started[@]}"; do
    keys+="$(tail -n +"$((seen[$n] + 1))" "$state/node$n.log" | grep "^admin " || true)"
  done
  echo
  if [ -n "$keys" ]; then
    echo "Admin account created. Record these keys now: no node prints them again."
    echo "$keys"
  else
    echo "Admin keys: printed on the cluster's first start only, by the node that owns the"
    echo "admin account; they stay in its log: grep '^admin ' $state/node*.log"
  fi
}

status() {
  for n in "${nodes[@]}"; do
    if alive "$n"; then
      local ready
      ready="$(curl -s --max-time 2 "http://127.0.0.$n:8081/ready" || echo 'no answer')"
      echo "node$n running (pid $(pid_of "$n")): $ready"
    else
      echo "node$n stopped (see $state/node$n.log)"
    fi
  done
  any_alive || return 0
  local answer
  if [ -z "$(admin_key)" ]; then
    echo "groups: unknown (no admin api_key in $state/node*.log to ask GET /v1/cluster)"
  elif ! answer="$(cluster_state)"; then
    echo "groups: unknown (no running node answered GET /v1/cluster)"
  elif [ -z "$(group_leaders <<<"$answer")" ]; then
    echo "groups: none (the cluster is not replicated)"
  else
    # One line per leader with the groups it leads, then the groups without a leader.
    group_leaders <<<"$answer" | awk '
      { led[$2] = led[$2] " " $1 }
      END {
        for (l in led) if (l != "-") print "  " l " leads" led[l] | "sort"
        close("sort")
        if ("-" in led) print "  no leader:" led["-"]
      }' | { echo "groups (leaders as GET /v1/cluster reports them):"; cat; }
  fi
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
    rm -f "$state/node$n.pid"
    echo "node$n stopped"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
