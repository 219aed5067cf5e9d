# Starts and stops a local Tansu broker for tests and the quick start. Source it:
#   . scripts/broker.sh && broker_start    # exports KAFKA_BROKERS, creates the topics
#   broker_stop
# Memory storage by default; set TANSU_STORAGE (e.g. sqlite://path/tansu.db) to keep data.

broker_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

broker_start() {
  if ! command -v tansu >/dev/null 2>&1; then
    echo "tansu is not installed: cargo install tansu --features dynostore,libsql --locked" >&2
    return 1
  fi
  local port log
  port="${TANSU_PORT:-$(broker_free_port)}"
  log="${TANSU_LOG:-${TMPDIR:-/tmp}/callproof-tansu-$port.log}"
  tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "${TANSU_STORAGE:-memory://tansu/}" >"$log" 2>&1 &
  BROKER_PID=$!
  export KAFKA_BROKERS="127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      break
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      echo "tansu exited at start; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  local topic
  for topic in callproof.calls.v1 callproof.siem.v1; do
    tansu topic create "$topic" --broker "tcp://$KAFKA_BROKERS" --partitions 3 >/dev/null 2>&1 \
      || echo "topic $topic not created (it may exist already)" >&2
  done
  echo "tansu broker on $KAFKA_BROKERS (pid $BROKER_PID, log $log)" >&2
}

broker_stop() {
  if [ -n "${BROKER_PID:-}" ]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    unset BROKER_PID
  fi
}
