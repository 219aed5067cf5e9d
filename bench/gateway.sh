#!/usr/bin/env bash
# What the gateway costs per call, against a direct call and nginx as a plain reverse proxy, in
# one run (issue "The gateway at wire speed"). Three targets, interleaved round by round, at 1
# and 16 connections: the upstream directly (nginx answering a small JSON), nginx proxying to
# it, and callproof-ingress calling it as a function (EdDSA token from the demo issuer, every
# event acknowledged by the broker at $KAFKA_BROKERS, or a Tansu broker started here).
#
#   bench/gateway.sh [--seconds S] [--rounds R] [--kafka-property KEY=VALUE ...]
#
# `--kafka-property` sets a librdkafka property of the gateway's producer (`[kafka.properties]`),
# to measure a setting, e.g. `--kafka-property linger.ms=0`.
#
# Prints, per target and connection count, the medians over the rounds of requests/s, p50 and
# p99 latency (wrk), and CPU per call of the gateway, of nginx and of the broker (from
# /proc/<pid>/stat over each run); then callproof's figures as ratios against the direct call
# and against nginx of the same run. Installs Debian's wrk and nginx if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
seconds=10
rounds=3
kafka_properties=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --kafka-property) kafka_properties+="\"${2%%=*}\" = \"${2#*=}\""$'\n'; shift 2 ;;
    *) echo "usage: bench/gateway.sh [--seconds S] [--rounds R] [--kafka-property KEY=VALUE ...]" >&2; exit 2 ;;
  esac
done

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
cargo build --release -p callproof-ingress -p callproof-demo --bins
bin="$target_dir/release"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  if declare -f broker_stop >/dev/null; then broker_stop; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_ready() { # name, url
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready at $2" >&2
  tail -n 30 "$work/$1.log" >&2 || true
  exit 1
}

if [ -z "${KAFKA_BROKERS:-}" ]; then
  . scripts/broker.sh
  broker_start
fi
broker_pid=${BROKER_PID:-$(pgrep -f "tansu broker.*${KAFKA_BROKERS##*:}" | head -n 1 || true)}

upstream_port=$(free_port)
proxy_port=$(free_port)
issuer_port=$(free_port)
gateway_port=$(free_port)

# nginx: the upstream (a small JSON, as a function would answer) and a reverse proxy to it
# with keep-alive, as a gateway without audit would be deployed.
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream function { server 127.0.0.1:$upstream_port; keepalive 64; }
  server {
    listen 127.0.0.1:$upstream_port;
    location / {
      default_type application/json;
      return 200 '{"customer_id":42,"name":"Ada Lovelace","status":"active","balance":1250}';
    }
  }
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://function;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
nginx -c "$work/nginx.conf" -p "$work"

"$bin/callproof-demo-issuer" --listen "127.0.0.1:$issuer_port" --data-dir "$work/issuer" \
  >"$work/issuer.log" 2>&1 &
pids+=("$!")
wait_ready issuer "http://127.0.0.1:$issuer_port/.well-known/openid-configuration"

cat >"$work/gateway.toml" <<EOF
[ingress]
listen = "127.0.0.1:$gateway_port"
instance_id = "bench-gateway"
public_url = "http://127.0.0.1:$gateway_port"

[oidc]
issuer = "http://127.0.0.1:$issuer_port"
audiences = ["callproof"]
groups_claim = "groups"
algorithms = ["EdDSA"]

[kafka]
brokers = "$KAFKA_BROKERS"

[kafka.properties]
$kafka_properties
[functions.lookup_customer]
upstream = "http://127.0.0.1:$upstream_port/customers/lookup"
timeout_ms = 5000
credential = { kind = "bearer", token = "\${BENCH_FUNCTION_TOKEN}" }

[functions.lookup_customer.policy]
allow_groups = ["support"]
EOF
BENCH_FUNCTION_TOKEN=bench-function-token RUST_LOG=warn \
  "$bin/callproof-ingress" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_ready gateway "http://127.0.0.1:$gateway_port/readyz"

token=$(curl -fsS "http://127.0.0.1:$issuer_port/token?sub=bench&groups=support")
body='{"customer_id": 42}'
path=/v1/functions/lookup_customer/invoke
check=$(curl -sS -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$gateway_port$path")
if [ "$check" != 200 ]; then
  echo "callproof answered $check to the benchmark's call; its log:" >&2
  tail -n 30 "$work/gateway.log" >&2
  exit 1
fi

cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $token"
EOF

# CPU ticks (user + system) of processes, summed.
ticks() {
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
nginx_pids() { pgrep -f "nginx: worker process" | tr '\n' ' '; }

results="$work/results.tsv"
: >"$results"
for round in $(seq 1 "$rounds"); do
  for connections in 1 16; do
    threads=$((connections < 2 ? 1 : 2))
    for target in direct nginx callproof; do
      case "$target" in
        direct) url="http://127.0.0.1:$upstream_port$path" ;;
        nginx) url="http://127.0.0.1:$proxy_port$path" ;;
        callproof) url="http://127.0.0.1:$gateway_port$path" ;;
      esac
      # shellcheck disable=SC2046
      before=("$(ticks "$gateway_pid")" "$(ticks $(nginx_pids))" "$(ticks $broker_pid)")
      wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "$url" \
        >"$work/wrk.out"
      # shellcheck disable=SC2046
      after=("$(ticks "$gateway_pid")" "$(ticks $(nginx_pids))" "$(ticks $broker_pid)")
      python3 - "$work/wrk.out" "$round" "$connections" "$target" \
        "$((after[0] - before[0]))" "$((after[1] - before[1]))" "$((after[2] - before[2]))" \
        "$(getconf CLK_TCK)" >>"$results" <<'EOF'
import re, sys
out, round_, connections, target, gateway, nginx, broker, clk = sys.argv[1:]
text = open(out).read()
def seconds(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
latency = {p: seconds(*re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M).groups())
           for p in ("50", "99")}
requests = int(re.search(r"(\d+) requests in", text).group(1))
failed = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
if failed or errors:
    sys.exit(f"{target} at {connections} connections: {failed.group(0) if failed else ''} {errors.group(0) if errors else ''}")
per_call = lambda ticks: int(ticks) / int(clk) / max(requests, 1) * 1e6
print("\t".join(str(v) for v in (round_, connections, target, rps, latency["50"] * 1e6,
      latency["99"] * 1e6, per_call(gateway), per_call(nginx), per_call(broker))))
EOF
      echo "round $round, $connections connection(s), $target: $(tail -n 1 "$results" | cut -f4 | cut -d. -f1) rps" >&2
    done
  done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
by = {}
for round_, connections, target, *values in rows:
    by.setdefault((int(connections), target), []).append([float(v) for v in values])
med = {key: [statistics.median(column) for column in zip(*values)] for key, values in by.items()}
print(f"medians over {len(rows) // 6} interleaved rounds")
print("| connections | target | rps | p50 µs | p99 µs | gateway CPU µs/call | nginx CPU µs/call | broker CPU µs/call |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for connections in (1, 16):
    for target in ("direct", "nginx", "callproof"):
        rps, p50, p99, gateway, nginx, broker = med[(connections, target)]
        print(f"| {connections} | {target} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | "
              f"{gateway if target == 'callproof' else 0:,.0f} | "
              f"{nginx if target != 'callproof' else 0:,.0f} | {broker if target == 'callproof' else 0:,.0f} |")
for connections in (1, 16):
    direct, nginx, ours = (med[(connections, t)] for t in ("direct", "nginx", "callproof"))
    print(f"{connections} connection(s): callproof serves {ours[0] / nginx[0]:.3f}x nginx and "
          f"{ours[0] / direct[0]:.3f}x direct; adds {ours[1] - direct[1]:,.0f} µs at p50 and "
          f"{ours[2] - direct[2]:,.0f} µs at p99 over the direct call")
EOF
