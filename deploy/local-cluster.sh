#!/usr/bin/env bash
# Runs a three-node webhookd cluster on this machine: node1..node3 on 127.0.0.1..127.0.0.3,
# HTTP on port 8081 and cluster traffic on port 7081 of each address. The nodes replicate
# every shard group on all three (cluster.replication_factor = 3 in deploy/local/).
#
#   deploy/local-cluster.sh start    build (cargo build --release), start the stopped nodes,
#                                    wait until they are ready and every group is led by
#                                    its preferred voter
#   deploy/local-cluster.sh status   show each node's process and /ready answer, and which
#                                    node leads each group (GET /v1/cluster)
#   deploy/local-cluster.sh stop     stop the nodes (SIGTERM, then wait for them to exit)
#   deploy/local-cluster.sh restart  rebuild, then restart the nodes one at a time, each
#                                    once the previous one has caught up (a rolling
#                                    restart: the cluster serves throughout)
#   deploy/local-cluster.sh add N    start node N (4..254) on 127.0.0.N as a joining node
#                                    and admit it (webhookd cluster add): the groups move
#                                    its share of replicas and leads to it
#   deploy/local-cluster.sh remove N remove node N (webhookd cluster remove): the groups
#                                    move its replicas off it; then stop it and delete
#                                    its data
#
# Everything the cluster writes goes under deploy/local/run (git-ignored; set
# LOCAL_CLUSTER_DIR to use another directory): nodeN/ is node N's storage, nodeN.log its
# stdout and stderr, nodeN.pid its pid, cookie the cluster cookie generated on the first
# start; nodeN.toml is the config of a node added with `add`, nodeN.removed marks one of
# node1..node3 removed with `remove`. The binary is the one cargo builds: $CARGO_TARGET_DIR/release/webhookd when
# CARGO_TARGET_DIR is set, else target/release/webhookd.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
state="${LOCAL_CLUSTER_DIR:-deploy/local/run}"
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release/webhookd"

# The members: node1..node3 (deploy/local/), less those removed, then the added ones.
current_nodes() {
  local n f
  for n in 1 2 3; do [ -e "$state/node$n.removed" ] || echo "$n"; done
  for f in "$state"/node*.toml; do
    [ -e "$f" ] || continue
    n="${f##*/node}"
    echo "${n%.toml}"
  done | sort -n
}
mapfile -t nodes < <(current_nodes)

# The config of node $1: its own under $state when it was added, else deploy/local's.
config_of() {
  if [ -e "$state/node$1.toml" ]; then echo "$state/node$1.toml"; else echo "deploy/local/node$1.toml"; fi
}
is_member() { local n; for n in "${nodes[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1; }

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

# The "group", "target" (its first, preferred voter) and "leader" ("null" for none) fields
# of a GET /v1/cluster answer, in order, one "name value" line each. A pending move names a
# group too (and a target that is not a list), with no leader: only a group's own leader
# ends its fields.
group_fields() {
  { grep -o '"group":"[^"]*"\|"target":\["[^"]*"\|"leader":\(null\|"[^"]*"\)' || true; } \
    | sed 's/^"\([a-z]*\)":\[\{0,1\}/\1 /; s/"//g'
}

# "group leader" lines (leader "-" when the group has none) of a GET /v1/cluster answer,
# read from its replication.groups; none when the cluster is not replicated.
group_leaders() {
  group_fields | awk '$1 == "group" { g = $2 } $1 == "leader" { print g, ($2 == "null" ? "-" : $2) }'
}

# The groups of a GET /v1/cluster answer not led by their preferred voter, one per line,
# a group without a leader included.
misplaced_leads() {
  group_fields | awk '$1 == "group" { g = $2 } $1 == "target" { t = $2 } $1 == "leader" && $2 != t { print g }'
}

# Starts node $1 in the background with the cluster cookie $2.
launch() {
  WEBHOOKD_CLUSTER__COOKIE="$2" WEBHOOKD_STORAGE__PATH="$state/node$1" \
    nohup "$bin" serve --config "$(config_of "$1")" \
    >>"$state/node$1.log" 2>&1 </dev/null &
  echo $! > "$state/node$1.pid"
  echo "node$1 started (pid $!), http://127.0.0.$1:8081, log $state/node$1.log"
}

# Stops node $1 with SIGTERM (it hands its groups' leads over first); SIGKILL after 10 s.
stop_node() {
  alive "$1" && kill -TERM "$(pid_of "$1")"
  for _ in $(seq 1 100); do
    alive "$1" || break
    sleep 0.1
  done
  if alive "$1"; then
    echo "node$1 did not stop in time; killing it"
    kill -KILL "$(pid_of "$1")" || true
  fi
  rm -f "$state/node$1.pid"
  echo "node$1 stopped"
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
    launch "$n" "$cookie"
    started+=("$n")
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
  # Then (at most 30 s more, with every node running) until each group is led by its
  # preferred voter: the nodes move leads there within seconds of a start, and a write
  # caught in such a handover is answered 503 (docs/cluster.md), which a client run right
  # after this script would meet.
  local all_up=1 answer
  for n in "${nodes[@]}"; do alive "$n" || all_up=0; done
  if [ "$all_up" -eq 1 ] && [ -n "$(admin_key)" ]; then
    for _ in $(seq 1 150); do
      answer="$(cluster_state)" || break
      [ -z "$(misplaced_leads <<<"$answer")" ] && break
      sleep 0.2
    done
  fi
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
    stop_node "$n"
  done
}

# The rolling restart of docs/cluster.md: rebuild, then one node at a time, stop it (it
# hands its leads over), start it on its data, and wait with `webhookd cluster status
# --wait` until every group is led and every follower caught up before the next one.
restart() {
  local n key cookie
  for n in "${nodes[@]}"; do
    alive "$n" || { echo "node$n is not running: run '$0 start' first" >&2; exit 1; }
  done
  key="$(admin_key)"
  [ -n "$key" ] || { echo "no admin api_key in $state/node*.log to ask GET /v1/cluster" >&2; exit 1; }
  echo "building $bin (cargo build --release)..."
  cargo build --release
  cookie="$(cat "$state/cookie")"
  local i
  for i in "${!nodes[@]}"; do
    n="${nodes[$i]}"
    stop_node "$n"
    launch "$n" "$cookie"
    local other="${nodes[$(((i + 1) % ${#nodes[@]}))]}"
    if ! WEBHOOKD_API_KEY="$key" "$bin" cluster status --target "http://127.0.0.$other:8081" \
      --wait 60 >/dev/null; then
      echo "node$n did not catch up within 60 s: stopping the rolling restart" >&2
      exit 1
    fi
    echo "node$n restarted and caught up"
  done
  status
}

# A running member other than node $1, to send the cluster commands to.
other_than() {
  local n
  for n in "${nodes[@]}"; do
    [ "$n" != "$1" ] && alive "$n" && { echo "$n"; return 0; }
  done
  echo "no running member to ask: run '$0 start' first" >&2
  exit 1
}

# The admin key, or an explanation.
require_key() {
  local key; key="$(admin_key)"
  [ -n "$key" ] || { echo "no admin api_key in $state/node*.log: run '$0 start' first" >&2; exit 1; }
  echo "$key"
}

# Docs/cluster.md "Adding a node": start node $1 as a joining node with node1's settings,
# then admit it and wait until it holds its share.
add() {
  local n="${1:-}" key other
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 4 ] && [ "$n" -le 254 ] \
    || { echo "usage: $0 add N, N from 4 to 254" >&2; exit 2; }
  ! is_member "$n" || { echo "node$n is a member already" >&2; exit 1; }
  key="$(require_key)"
  other="$(other_than "$n")"
  echo "building $bin (cargo build --release)..."
  cargo build --release
  # node1's settings up to its member list, as node$n, joining; the list holds itself.
  sed -n '/^\[\[cluster.members\]\]/q; p' deploy/local/node1.toml \
    | sed "s/node1/node$n/g; s/127\.0\.0\.1:/127.0.0.$n:/g" > "$state/node$n.toml"
  printf 'join = true\n\n[[cluster.members]]\nid = "node%s"\ncluster_addr = "127.0.0.%s:7081"\nhttp_addr = "127.0.0.%s:8081"\n' \
    "$n" "$n" "$n" >> "$state/node$n.toml"
  rm -f "$state/node$n.removed"
  launch "$n" "$(cat "$state/cookie")"
  if ! WEBHOOKD_API_KEY="$key" "$bin" cluster add --target "http://127.0.0.$other:8081" \
    --id "node$n" --cluster-addr "127.0.0.$n:7081" --http-addr "127.0.0.$n:8081" --wait 120; then
    echo "node$n was not admitted, or did not take its share within 120 s" >&2
    exit 1
  fi
  echo "node$n admitted: it holds its share of the groups"
}

# Docs/cluster.md "Removing a node": drain node $1, then stop it and delete its data.
remove() {
  local n="${1:-}" key other
  is_member "$n" || { echo "usage: $0 remove N, N a member (${nodes[*]})" >&2; exit 2; }
  key="$(require_key)"
  other="$(other_than "$n")"
  if ! WEBHOOKD_API_KEY="$key" "$bin" cluster remove --target "http://127.0.0.$other:8081" \
    --id "node$n" --wait 120; then
    echo "node$n was not removed within 120 s: it keeps running" >&2
    exit 1
  fi
  stop_node "$n"
  rm -rf "${state:?}/node$n"
  if [ -e "$state/node$n.toml" ]; then rm -f "$state/node$n.toml"; else touch "$state/node$n.removed"; fi
  echo "node$n removed from the cluster, stopped, its data deleted"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) restart ;;
  add) add "${2:-}" ;;
  remove) remove "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|restart|add N|remove N" >&2; exit 2 ;;
esac
