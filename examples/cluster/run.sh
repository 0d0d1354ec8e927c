#!/usr/bin/env bash
# Three gateway nodes on one Redis behind nginx, all on loopback.
#
#   examples/cluster/run.sh start   # prints the URLs; state under $RUN_DIR
#   examples/cluster/run.sh stop    # stops what start started, by PID
#
# Environment: GATEWAY_BIN (default target/debug/sockjs-gateway, built if missing),
# RUN_DIR (default /tmp/sockjs-gateway-cluster), REDIS_URL (default: a private redis-server
# on a free port, started and stopped here), HTTP_PORT / TCP_PORT (default: free ports),
# SOCKJS_URL (the sockjs-client URL the iframe page loads; default: the gateway's own).
# Every process is started by this script and stopped by the PID it recorded; nothing else
# is touched (nginx runs with its own prefix and config, never the system service).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
run="${RUN_DIR:-/tmp/sockjs-gateway-cluster}"
bin="${GATEWAY_BIN:-$root/target/debug/sockjs-gateway}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_line() { # file pattern seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "run.sh: timed out waiting for '$2' in $1" >&2
      tail -20 "$1" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

stop() {
  for pidfile in "$run"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

start() {
  stop
  mkdir -p "$run/nginx/tmp"
  if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --bin sockjs-gateway)
  fi
  redis="${REDIS_URL:-}"
  if [ -z "$redis" ]; then
    rport="$(free_port)"
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$run" >"$run/redis.log" 2>&1 &
    echo $! >"$run/redis.pid"
    redis="redis://127.0.0.1:$rport/0"
    wait_for_line "$run/redis.log" "Ready to accept connections" 20
  fi
  http="${HTTP_PORT:-$(free_port)}"
  tcp="${TCP_PORT:-$(free_port)}"
  declare -a nports tports
  for i in 1 2 3; do
    nports[$i]="$(free_port)"
    tports[$i]="$(free_port)"
    sed -e "s|@NODE@|node$i|" -e "s|@PORT@|${nports[$i]}|" -e "s|@TCP@|${tports[$i]}|" \
      -e "s|@REDIS@|$redis|" -e "s|@SOCKJS_URL@|${SOCKJS_URL:+sockjs_url = \"$SOCKJS_URL\"}|" \
      "$here/node.toml.in" >"$run/node$i.toml"
    SOCKJS_GATEWAY_LOG="${SOCKJS_GATEWAY_LOG:-info}" "$bin" --config "$run/node$i.toml" \
      >"$run/node$i.log" 2>&1 &
    echo $! >"$run/node$i.pid"
  done
  for i in 1 2 3; do wait_for_line "$run/node$i.log" "listening on http://" 30; done
  sed -e "s|@DIR@|$run/nginx|g" -e "s|@HTTP@|$http|" -e "s|@TCP@|$tcp|" \
    -e "s|@N1@|${nports[1]}|" -e "s|@N2@|${nports[2]}|" -e "s|@N3@|${nports[3]}|" \
    -e "s|@T1@|${tports[1]}|" -e "s|@T2@|${tports[2]}|" -e "s|@T3@|${tports[3]}|" \
    "$here/nginx.conf.in" >"$run/nginx/nginx.conf"
  nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" >"$run/nginx.log" 2>&1 &
  echo $! >"$run/nginx.pid"
  local deadline=$((SECONDS + 20))
  until curl -fsS "http://127.0.0.1:$http/stomp/info" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "run.sh: nginx did not answer" >&2
      cat "$run/nginx.log" "$run/nginx/error.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  cat >"$run/env" <<ENV
HTTP_PORT=$http
TCP_PORT=$tcp
REDIS_URL=$redis
NODE1_PORT=${nports[1]}
NODE2_PORT=${nports[2]}
NODE3_PORT=${nports[3]}
NODE1_TCP=${tports[1]}
NODE2_TCP=${tports[2]}
NODE3_TCP=${tports[3]}
ENV
  echo "SockJS/STOMP through nginx: http://127.0.0.1:$http/stomp"
  echo "STOMP over TCP through nginx: 127.0.0.1:$tcp"
  echo "nodes: ${nports[1]} ${nports[2]} ${nports[3]}; Redis: $redis; logs and PIDs in $run"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
