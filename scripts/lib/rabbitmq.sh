# A private RabbitMQ node for tests and benchmarks: its own node name, data directory and
# ports (AMQP, distribution, STOMP, Web-STOMP, all on 127.0.0.1, never 5672, 61613 or
# 15674), with rabbitmq_web_stomp (and so rabbitmq_stomp) enabled offline through its own
# enabled_plugins file, so a broker already running on this machine is never touched.
# Debian's rabbitmq-server is installed when missing.
#
# Source this file, then:
#   start_rabbit DIR     start a node with its files under DIR; sets RABBIT_NODE, RABBIT_PID,
#                        RABBIT_VERSION, RABBIT_WS_PORT (Web-STOMP at ws://127.0.0.1:PORT/ws)
#                        and RABBIT_STOMP_PORT; returns 1 when it cannot
#   stop_rabbit          stop it (rabbitmqctl stop, else by its PID)

rabbit_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
rabbit_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rabbitctl() { env RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/env.conf" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" "$@"; }

stop_rabbit() {
  if [ "${RABBIT_STARTED:-0}" = 1 ]; then
    rabbitctl stop >/dev/null 2>&1 || kill "${RABBIT_PID:-}" 2>/dev/null
    kill "${RABBIT_SHELL_PID:-}" 2>/dev/null
    wait "${RABBIT_SHELL_PID:-}" 2>/dev/null
    RABBIT_STARTED=0
  fi
}

start_rabbit() {
  RABBIT_DIR=$1
  RABBIT_NODE=${RABBIT_NODE:-sockjsgw$$@localhost}
  if ! command -v rabbitmq-server >/dev/null; then
    rabbit_log "installing rabbitmq-server"
    apt-get update -qq && apt-get install -y -qq rabbitmq-server >&2 || return 1
  fi
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || return 1
  ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_web_stomp-* >/dev/null 2>&1 || return 1
  mkdir -p "$RABBIT_DIR"/{mnesia,log}
  local amqp dist reserved
  amqp=$(rabbit_free_port); dist=$(rabbit_free_port)
  RABBIT_WS_PORT=$(rabbit_free_port); RABBIT_STOMP_PORT=$(rabbit_free_port)
  reserved=" 5672 15674 61613 $amqp $dist "
  while [[ "$reserved" == *" $RABBIT_WS_PORT "* ]]; do RABBIT_WS_PORT=$(rabbit_free_port); done
  reserved="$reserved$RABBIT_WS_PORT "
  while [[ "$reserved" == *" $RABBIT_STOMP_PORT "* ]]; do RABBIT_STOMP_PORT=$(rabbit_free_port); done
  echo "[rabbitmq_web_stomp]." > "$RABBIT_DIR/enabled_plugins"
  cat > "$RABBIT_DIR/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$amqp
stomp.listeners.tcp.1 = 127.0.0.1:$RABBIT_STOMP_PORT
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $RABBIT_WS_PORT
loopback_users.guest = true
CONF
  echo "ERL_EPMD_ADDRESS=127.0.0.1" > "$RABBIT_DIR/env.conf"
  rabbit_log "starting a private RabbitMQ node $RABBIT_NODE (web-stomp on 127.0.0.1:$RABBIT_WS_PORT, stomp on 127.0.0.1:$RABBIT_STOMP_PORT)"
  env RABBITMQ_NODENAME="$RABBIT_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT="$amqp" RABBITMQ_DIST_PORT="$dist" \
      RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/env.conf" \
      RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log" \
      RABBITMQ_PID_FILE="$RABBIT_DIR/pid" \
      /usr/lib/rabbitmq/bin/rabbitmq-server > "$RABBIT_DIR/stdout.log" 2>&1 &
  RABBIT_SHELL_PID=$!
  RABBIT_STARTED=1
  local up=0
  for _ in $(seq 1 60); do
    sleep 1
    kill -0 "$RABBIT_SHELL_PID" 2>/dev/null || break
    if timeout 20 env RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/env.conf" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 15 >/dev/null 2>&1; then
      up=1; break
    fi
  done
  if [ "$up" != 1 ]; then
    tail -20 "$RABBIT_DIR/stdout.log" >&2
    return 1
  fi
  RABBIT_PID=$(rabbitctl eval 'list_to_integer(os:getpid()).' 2>/dev/null | tr -dc 0-9)
  RABBIT_VERSION=$(rabbitctl eval 'element(2, application:get_key(rabbit, vsn)).' 2>/dev/null | tr -d '"<>')
  [ -n "$RABBIT_PID" ] || return 1
  # Wait for the web-stomp listener.
  for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$RABBIT_WS_PORT),1)" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
