#!/usr/bin/env bash
# What the gateway costs per call, against a direct call and nginx as a plain reverse proxy, in
# one run (issue "The gateway at wire speed"). Three targets, interleaved round by round, at 1
# and 16 connections: the upstream directly (nginx answering a small JSON), nginx proxying to
# it, and callproof-ingress calling it as a function (EdDSA token from the demo issuer, every
# event acknowledged by the broker at $KAFKA_BROKERS, or a Tansu broker started here).
#
#   bench/gateway.sh [--mcp | --approval] [--mcp-upstream python|rust] [--callers N] [--worker-threads N] [--stages] [--seconds S] [--rounds R] [--kafka-property KEY=VALUE ...]
#
# `--mcp` measures an MCP `tools/call` instead (issue 16, item 10; issue 17, item 5). The
# upstream is the tests' MCP server (tests/mcp/upstream.py, official Python SDK 2.x, answering
# JSON), started by bench/mcp_upstream.py under $CALLPROOF_MCP2_PYTHON or
# ~/.cache/callproof-py/mcp2/bin/python (where .ci/run installs it). Its tool `echo` is called
# in the stateless 2026-07-28 form (one POST per call, no session): directly, through nginx, and
# through callproof's /mcp as `bench__echo` (`[mcp]` with one server, a token whose audience is
# the resource URI, the detectors on as by default). A JSON-RPC error or a result with
# `isError` fails the run as a non-2xx answer does. The table adds the upstream's CPU per call.
#
# `--mcp-upstream rust` takes the demo crate's rmcp server (callproof-demo-mcp, tool `echo`,
# answering SSE) as the upstream instead, so that the upstream is not what saturates.
#
# `--callers N` mints N tokens (subjects bench-1..N) and gives one to each wrk thread (as many
# threads as callers, at most one per connection): callproof keeps upstream MCP connections per
# caller, so 16 connections of one caller and of 16 callers differ. Default 1.
#
# A fourth target in every round, `acks`, is the floor under callproof: ingress/benches/acks.rs
# makes, with the gateway's own `[kafka]` and `[ingress]` and at the same concurrency, a call's
# two acknowledged publishes (`call_received` with `call_forwarded`, then `call_completed`, as
# the gateway publishes them) and nothing else: no HTTP, token, policy, masking or upstream.
# What callproof adds beyond it is the gateway's own.
#
# Figures (2026-12-02 afternoon, the 2-core machine quiet, 3 rounds of 5 s, one runtime thread
# as by default on 2 cores; rps, p50/p99 in µs, CPU in µs per call):
#
#   connections, target | rps     | p50   | p99   | gateway CPU | broker CPU
#   1, direct           | 16,640  | 73    | 428   |             |
#   1, nginx            | 11,490  | 90    | 479   |             |
#   1, callproof        | 1,213   | 791   | 1,620 | 407         | 381
#   1, acks only        | 1,450   | 645   | 1,501 | 277         | 429
#   16, direct          | 136,125 | 54    | 3,280 |             |
#   16, nginx           | 52,178  | 243   | 3,520 |             |
#   16, callproof       | 5,753   | 2,580 | 6,160 | 149         | 92
#   16, acks only       | 7,705   | 1,964 | 4,243 | 53          | 101
#
# At one connection callproof adds 718 µs at p50 and 1,192 at p99, of which the two
# acknowledgements alone take 645 µs. At 16 connections it adds 2,526 µs at p50, and the two
# acknowledgements alone take 1,964 µs and reach 0.148x nginx with nothing else running: Tansu on
# the same two cores answers a produce in about a millisecond once requests queue, so no gateway
# could reach 1.5 ms or 0.25x nginx at 16 connections against this broker on this machine.
#
# `--mcp-upstream rust` the same afternoon (2 rounds; upstream CPU per call in the last column):
#
#   connections, target | rps     | p50   | p99   | gateway CPU | broker CPU | upstream CPU
#   1, direct           | 7,058   | 133   | 322   |             |            | 142
#   1, nginx            | 4,777   | 194   | 746   |             |            | 134
#   1, callproof        | 762     | 1,245 | 2,305 | 663         | 422        | 236
#   1, acks only        | 1,622   | 580   | 1,385 | 258         | 374        |
#   16, direct          | 19,144  | 788   | 1,870 |             |            | 76
#   16, nginx           | 14,095  | 1,060 | 2,535 |             |            | 77
#   16, callproof       | 3,072   | 5,030 | 9,670 | 260         | 137        | 112
#   16, acks only       | 8,519   | 1,807 | 3,556 | 50          | 90         |
#
# Earlier (morning of 2026-12-02, two runtime threads, other builds running, load 3-4.5):
#
#   path, connections      | direct            | nginx             | callproof          | gateway, broker CPU
#   function, 1            | 23,295, 0.03, 3.9 | 8,924, 0.09, 4.8  | 964, 0.94, 6.3     | 542, 460
#   function, 16           | 62,079, 0.17, 7.0 | 22,905, 0.62, 6.9 | 3,450, 4.2, 14.6   | 224, 127
#   MCP Rust demo, 1       | 7,321, 0.11, 3.3  | 4,013, 0.21, 4.5  | 714, 1.24, 6.5     | 725, 535
#   MCP Rust demo, 16      | 12,083, 1.2, 7.2  | 8,444, 1.7, 11.1  | 2,411, 6.2, 16.6   | 322, 152
#   MCP Python SDK, 1      | 986, 0.8, 48      | 651, 1.1, 55      | 230, 3.6, 112      | 1,098, 681 (1 round)
#   MCP Python SDK, 16     | 765, 17.6, 189    | 828, 17.3, 89     | 638, 23.8, 72      | 623, 341 (1 round)
#
# The Python SDK upstream saturates first (1 ms of its CPU per call): use `--mcp-upstream rust`
# to measure the gateway.
#
# `--approval` measures the approval path (issue 17, item 5): a function whose every call needs
# one approval. bench/approval_driver.py, with 1 and 16 workers, has each worker make the call
# (held: 202 with its id), approve it as an approver of another subject, and wait for the result
# on the call's status URL (`Prefer: wait`), as an agent and a reviewer would. The same driver
# makes plain calls to the upstream directly and through callproof (a function without
# approval) in the same rounds, as the baseline; the table has each step's p50/p99 too. The
# approver approves at once, so the figures are callproof's around a decision, not the
# decision's. Same day, 3 rounds of 5 s: held 114 ms, decided 112 ms, released 223 ms at p50
# with one worker (2 held-and-approved calls/s; 26/s with 16): each step waits for the gateway
# to read its own event back, and Tansu 0.6 answers every fetch only after the consumer's
# `fetch.wait.max.ms` (100 ms) even when it has data (docs/approvals.md, What it costs).
#
# `--worker-threads N` sets `ingress.worker_threads` (default: cores - 1, at least 1). Run
# alternately with 1 and 2 on the 2-core machine (2 runs each): one thread added 0.63-0.68 ms at
# p50 at one connection against 0.97-1.06 ms with two, and 384-413 µs of gateway CPU per call
# against 541-602; at 16 connections the two were within the noise (0.107-0.128x nginx against
# 0.112-0.119x).
#
# `--stages` then reads the run's events back (bench/call_stages.py, confluent-kafka and fastavro
# as .ci/run installs them) and splits callproof's calls into the upstream call as the gateway
# timed it and the first acknowledgement with the work around the upstream call. MCP, same
# afternoon, 1 connection: the upstream call through rmcp's client takes 413 µs at p50 where wrk
# calling the same server directly takes 133, and a function's upstream call 85 µs; the first
# acknowledgement and around, 351 µs for MCP against 307 for a function.
#
# `--kafka-property` sets a librdkafka property of the gateway's producer (`[kafka.properties]`),
# to measure a setting, e.g. `--kafka-property linger.ms=2` (the default until 2026-12-02: it
# added 5 ms per call at one connection).
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
mode=http
mcp_upstream=python
callers=1
worker_threads=""
stages=no
while [ $# -gt 0 ]; do
  case "$1" in
    --mcp) mode=mcp; shift ;;
    --approval) mode=approval; shift ;;
    --mcp-upstream) mode=mcp; mcp_upstream=$2; shift 2 ;;
    --callers) callers=$2; shift 2 ;;
    --worker-threads) worker_threads=$2; shift 2 ;;
    --stages) stages=yes; shift ;;
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --kafka-property) kafka_properties+="\"${2%%=*}\" = \"${2#*=}\""$'\n'; shift 2 ;;
    *) echo "usage: bench/gateway.sh [--mcp | --approval] [--mcp-upstream python|rust] [--callers N] [--worker-threads N] [--stages] [--seconds S] [--rounds R] [--kafka-property KEY=VALUE ...]" >&2; exit 2 ;;
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
acks_bin=$(cargo build --release -p callproof-ingress --bench acks --message-format=json-render-diagnostics |
  python3 -c 'import json, sys
for message in map(json.loads, sys.stdin):
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "acks" and message.get("executable"):
        print(message["executable"])')

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

proxy_port=$(free_port)
issuer_port=$(free_port)
gateway_port=$(free_port)
upstream_pid=""

if [ "$mode" = mcp ] && [ "$mcp_upstream" = rust ]; then
  upstream_port=$(free_port)
  DEMO_MCP_TOKEN=bench-function-token RUST_LOG=warn \
    "$bin/callproof-demo-mcp" --listen "127.0.0.1:$upstream_port" >"$work/upstream.log" 2>&1 &
  upstream_pid=$!
  pids+=("$upstream_pid")
elif [ "$mode" = mcp ]; then
  python=${CALLPROOF_MCP2_PYTHON:-$HOME/.cache/callproof-py/mcp2/bin/python}
  if ! "$python" -c 'from mcp.server.mcpserver import MCPServer' 2>/dev/null; then
    echo "--mcp needs the MCP Python SDK 2.x at $python (set CALLPROOF_MCP2_PYTHON; .ci/run installs it)" >&2
    exit 1
  fi
  "$python" bench/mcp_upstream.py >"$work/upstream.port" 2>"$work/upstream.log" &
  upstream_pid=$!
  pids+=("$upstream_pid")
  for _ in $(seq 1 200); do
    upstream_port=$(awk '/^PORT /{print $2}' "$work/upstream.port")
    [ -n "$upstream_port" ] && break
    sleep 0.1
  done
  [ -n "$upstream_port" ] || { echo "the MCP upstream did not start:" >&2; cat "$work/upstream.log" >&2; exit 1; }
fi
if [ "$mode" = mcp ]; then
  # Wait for any HTTP answer (the Python server listens before uvicorn serves).
  for _ in $(seq 1 200); do
    [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$upstream_port/mcp")" != 000 ] && break
    sleep 0.1
  done
  path=/mcp
  resource="http://127.0.0.1:$gateway_port/mcp"
  audience=$resource
  upstream_server=""
else
  upstream_port=$(free_port)
  path=/v1/functions/lookup_customer/invoke
  audience=callproof
  # The upstream: a small JSON, as a function would answer.
  upstream_server="server {
    listen 127.0.0.1:$upstream_port;
    location / {
      default_type application/json;
      return 200 '{\"customer_id\":42,\"name\":\"Ada Lovelace\",\"status\":\"active\",\"balance\":1250}';
    }
  }"
fi

# nginx: a reverse proxy to the upstream with keep-alive, as a gateway without audit would be
# deployed (and in HTTP mode the upstream itself).
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
  $upstream_server
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://function;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # The MCP SDK refuses a Host that is not its own (DNS rebinding protection).
      proxy_set_header Host 127.0.0.1:$upstream_port;
    }
  }
}
EOF
nginx -c "$work/nginx.conf" -p "$work"

"$bin/callproof-demo-issuer" --listen "127.0.0.1:$issuer_port" --data-dir "$work/issuer" \
  --audience "$audience" >"$work/issuer.log" 2>&1 &
pids+=("$!")
wait_ready issuer "http://127.0.0.1:$issuer_port/.well-known/openid-configuration"

function_table() { # name, upstream path: a function that the group support may call
  cat >>"$work/gateway.toml" <<EOF

[functions.$1]
upstream = "http://127.0.0.1:$upstream_port$2"
timeout_ms = 5000
credential = { kind = "bearer", token = "\${BENCH_FUNCTION_TOKEN}" }

[functions.$1.policy]
allow_groups = ["support"]
EOF
}
cat >"$work/gateway.toml" <<EOF
[ingress]
listen = "127.0.0.1:$gateway_port"
instance_id = "bench-gateway"
public_url = "http://127.0.0.1:$gateway_port"
${worker_threads:+worker_threads = $worker_threads}

[oidc]
issuer = "http://127.0.0.1:$issuer_port"
audiences = ["callproof"]
groups_claim = "groups"
algorithms = ["EdDSA"]

[kafka]
brokers = "$KAFKA_BROKERS"

[kafka.properties]
$kafka_properties
EOF
if [ "$mode" = mcp ]; then
  cat >>"$work/gateway.toml" <<EOF
[mcp]
resource = "$resource"

[mcp.servers.bench]
url = "http://127.0.0.1:$upstream_port/mcp"
protocol = "2026-07-28"
timeout_ms = 5000
credential = { kind = "bearer", token = "\${BENCH_FUNCTION_TOKEN}" }

[mcp.servers.bench.default.policy]
allow_groups = ["support"]
EOF
else
  function_table lookup_customer /customers/lookup
fi
if [ "$mode" = approval ]; then
  function_table transfer_funds /transfers
  printf '\n[functions.transfer_funds.approval]\napprover_groups = ["treasury"]\n' >>"$work/gateway.toml"
fi
BENCH_FUNCTION_TOKEN=bench-function-token RUST_LOG=warn \
  "$bin/callproof-ingress" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_ready gateway "http://127.0.0.1:$gateway_port/readyz"

# One token per caller (subject bench-1, bench-2, ...); wrk's threads take them in turn.
tokens=""
for caller in $(seq 1 "$callers"); do
  tokens+="\"$(curl -fsS "http://127.0.0.1:$issuer_port/token?sub=bench-$caller&groups=support")\", "
done

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

if [ "$mode" = approval ]; then
  approver_token=$(curl -fsS "http://127.0.0.1:$issuer_port/token?sub=bench-approver&groups=treasury")
  caller_token=${tokens#\"}; caller_token=${caller_token%%\"*}
  results="$work/results.jsonl"
  : >"$results"
  for round in $(seq 1 "$rounds"); do
    for workers in 1 16; do
      for target in direct callproof approval; do
        case "$target" in
          direct) kind=plain; url="http://127.0.0.1:$upstream_port/transfers"; token="" ;;
          callproof) kind=plain; url="http://127.0.0.1:$gateway_port/v1/functions/lookup_customer/invoke"; token=$caller_token ;;
          approval) kind=approval; url="http://127.0.0.1:$gateway_port/v1/functions/transfer_funds/invoke"; token=$caller_token ;;
        esac
        # shellcheck disable=SC2086
        before=("$(ticks "$gateway_pid")" "$(ticks $broker_pid)")
        line=$(python3 bench/approval_driver.py "$kind" "$url" "$token" "$approver_token" "$workers" "$seconds")
        # shellcheck disable=SC2086
        after=("$(ticks "$gateway_pid")" "$(ticks $broker_pid)")
        python3 - "$line" "$round" "$workers" "$target" "$((after[0] - before[0]))" \
          "$((after[1] - before[1]))" "$(getconf CLK_TCK)" >>"$results" <<'EOF'
import json, sys
line, round_, workers, target, gateway, broker, clk = sys.argv[1:]
row = json.loads(line)
per_call = lambda ticks: int(ticks) / int(clk) / max(row["count"], 1) * 1e6
row.update(round=int(round_), workers=int(workers), target=target,
           gateway_cpu=per_call(gateway), broker_cpu=per_call(broker))
print(json.dumps(row))
EOF
        echo "round $round, $workers worker(s), $target: $(tail -n 1 "$results" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rps"]))') calls/s" >&2
      done
    done
  done
  python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rounds = len({row["round"] for row in rows})
def med(workers, target, key):
    values = [row[key] for row in rows if row["workers"] == workers and row["target"] == target and key in row]
    return statistics.median(values) if values else 0.0
print(f"medians over {rounds} interleaved rounds, approval path (bench/approval_driver.py)")
print("| workers | target | calls/s | p50 µs | p99 µs | gateway CPU µs/call | broker CPU µs/call |")
print("|---|---|---:|---:|---:|---:|---:|")
for workers in (1, 16):
    for target in ("direct", "callproof", "approval"):
        print(f"| {workers} | {target} | {med(workers, target, 'rps'):,.0f} | {med(workers, target, 'p50'):,.0f} | "
              f"{med(workers, target, 'p99'):,.0f} | "
              f"{med(workers, target, 'gateway_cpu') if target != 'direct' else 0:,.0f} | "
              f"{med(workers, target, 'broker_cpu') if target != 'direct' else 0:,.0f} |")
print("approval steps, p50 / p99 µs: held (POST to 202), decided (the approver's POST), released (decision to result)")
for workers in (1, 16):
    steps = ", ".join(f"{step} {med(workers, 'approval', step + '_p50'):,.0f} / {med(workers, 'approval', step + '_p99'):,.0f}"
                      for step in ("hold", "decide", "release"))
    direct, plain, held = (med(workers, t, "p50") for t in ("direct", "callproof", "approval"))
    print(f"{workers} worker(s): {steps}; a held-and-approved call takes {held / max(plain, 1):.1f}x a plain call "
          f"through callproof, adding {held - direct:,.0f} µs at p50 over the direct call")
EOF
  exit 0
fi

# One wrk script per target: the request, and for MCP a check of every answer's body.
write_lua() { # file, tool name (MCP) or empty, whether to send the tokens (yes/no)
  local body headers tokens_sent="" direct_authorization=""
  [ "$3" = yes ] && tokens_sent=$tokens
  # The Rust demo server wants the gateway's credential from whoever calls it directly.
  [ "$3" = no ] && [ "$mcp_upstream" = rust ] &&
    direct_authorization='wrk.headers["authorization"] = "Bearer bench-function-token"'
  if [ "$mode" = mcp ]; then
    body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"'$2'","arguments":{"message":"hello from the bench"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
    headers='wrk.headers["accept"] = "application/json, text/event-stream"
wrk.headers["mcp-protocol-version"] = "2026-07-28"
wrk.headers["mcp-method"] = "tools/call"
wrk.headers["mcp-name"] = "'$2'"'
  else
    body='{"customer_id": 42}'
    headers=""
  fi
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["content-type"] = "application/json"
$headers
$direct_authorization
local tokens = {$tokens_sent}
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  if #tokens > 0 then thread:set("token", tokens[(#threads - 1) % #tokens + 1]) end
end
EOF
  # init runs before wrk builds its request from wrk.headers.
  cat >>"$1" <<'EOF'
function init(args)
  failures = 0; sample = ""
  if token then wrk.headers["authorization"] = "Bearer " .. token end
end
EOF
  if [ "$mode" = mcp ]; then
    # MCP answers a failed call with 200 too: count answers that are not a successful result.
    cat >>"$1" <<'EOF'
function response(status, headers, body)
  if status ~= 200 or not body:find('"result"', 1, true) or not body:find('"isError":false', 1, true) then
    failures = failures + 1
    if sample == "" then sample = status .. " " .. body:sub(1, 300) end
  end
end
function done(summary, latency, requests)
  local total, sample = 0, ""
  for _, thread in ipairs(threads) do
    total = total + thread:get("failures")
    if sample == "" then sample = thread:get("sample") end
  end
  if total > 0 then io.write("MCP failures: " .. total .. " (first: " .. sample .. ")\n") end
end
EOF
  fi
}
if [ "$mode" = mcp ]; then
  write_lua "$work/direct.lua" echo no
  write_lua "$work/callproof.lua" bench__echo yes
else
  write_lua "$work/direct.lua" "" yes
  cp "$work/direct.lua" "$work/callproof.lua"
fi

# One call of each before measuring: a refusal would otherwise be measured as a fast answer.
for target in direct callproof; do
  port=$upstream_port
  [ "$target" = callproof ] && port=$gateway_port
  if ! wrk -t1 -c1 -d1s -s "$work/$target.lua" "http://127.0.0.1:$port$path" >"$work/check.out" ||
    grep -q "Non-2xx\|MCP failures\|Socket errors" "$work/check.out"; then
    echo "$target did not answer the benchmark's call:" >&2
    cat "$work/check.out" >&2
    tail -n 30 "$work/gateway.log" >&2
    exit 1
  fi
done

results="$work/results.tsv"
: >"$results"
for round in $(seq 1 "$rounds"); do
  for connections in 1 16; do
    threads=$((connections < 2 ? 1 : 2))
    if [ "$callers" -gt 1 ]; then threads=$((callers < connections ? callers : connections)); fi
    for target in direct nginx callproof acks; do
      if [ "$target" = acks ]; then
        # shellcheck disable=SC2086
        before=$(ticks $broker_pid)
        read -r rps p50 p99 calls cpu < <(BENCH_FUNCTION_TOKEN=bench-function-token "$acks_bin" \
          --config "$work/gateway.toml" --concurrency "$connections" --seconds "$seconds")
        # shellcheck disable=SC2086
        broker=$(( $(ticks $broker_pid) - before ))
        printf '%s\t%s\tacks\t%s\t%s\t%s\t%s\t0\t%s\t0\n' "$round" "$connections" "$rps" "$p50" "$p99" \
          "$cpu" "$(python3 -c "print($broker / $(getconf CLK_TCK) / max($calls, 1) * 1e6)")" >>"$results"
        echo "round $round, $connections connection(s), acks only: ${rps%.*} calls/s" >&2
        continue
      fi
      case "$target" in
        direct) url="http://127.0.0.1:$upstream_port$path"; lua=direct ;;
        nginx) url="http://127.0.0.1:$proxy_port$path"; lua=direct ;;
        callproof) url="http://127.0.0.1:$gateway_port$path"; lua=callproof ;;
      esac
      # shellcheck disable=SC2046,SC2086
      before=("$(ticks "$gateway_pid")" "$(ticks $(nginx_pids))" "$(ticks $broker_pid)" "$(ticks $upstream_pid)")
      started=$(date +%s%6N)
      wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$work/$lua.lua" "$url" \
        >"$work/wrk.out"
      if [ "$target" = callproof ]; then echo "$connections $started $(date +%s%6N)" >>"$work/windows"; fi
      # shellcheck disable=SC2046,SC2086
      after=("$(ticks "$gateway_pid")" "$(ticks $(nginx_pids))" "$(ticks $broker_pid)" "$(ticks $upstream_pid)")
      python3 - "$work/wrk.out" "$round" "$connections" "$target" \
        "$((after[0] - before[0]))" "$((after[1] - before[1]))" "$((after[2] - before[2]))" \
        "$((after[3] - before[3]))" "$(getconf CLK_TCK)" >>"$results" <<'EOF'
import re, sys
out, round_, connections, target, gateway, nginx, broker, upstream, clk = sys.argv[1:]
text = open(out).read()
def seconds(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
latency = {p: seconds(*re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M).groups())
           for p in ("50", "99")}
requests = int(re.search(r"(\d+) requests in", text).group(1))
failed = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
mcp_failed = re.search(r"MCP failures: .*", text)
if failed or errors or mcp_failed:
    sys.exit(f"{target} at {connections} connections: " + " ".join(
        m.group(0) for m in (failed, errors, mcp_failed) if m))
per_call = lambda ticks: int(ticks) / int(clk) / max(requests, 1) * 1e6
print("\t".join(str(v) for v in (round_, connections, target, rps, latency["50"] * 1e6,
      latency["99"] * 1e6, per_call(gateway), per_call(nginx), per_call(broker),
      per_call(upstream))))
EOF
      echo "round $round, $connections connection(s), $target: $(tail -n 1 "$results" | cut -f4 | cut -d. -f1) rps" >&2
    done
  done
done

python3 - "$results" "$mode" <<'EOF'
import statistics, sys
mcp = sys.argv[2] == "mcp"
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
by = {}
for round_, connections, target, *values in rows:
    by.setdefault((int(connections), target), []).append([float(v) for v in values])
med = {key: [statistics.median(column) for column in zip(*values)] for key, values in by.items()}
print(f"medians over {len(rows) // 8} interleaved rounds" + (", MCP tools/call" if mcp else ""))
print("| connections | target | rps | p50 µs | p99 µs | gateway CPU µs/call | nginx CPU µs/call | broker CPU µs/call |"
      + (" upstream CPU µs/call |" if mcp else ""))
print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if mcp else ""))
for connections in (1, 16):
    for target in ("direct", "nginx", "callproof", "acks"):
        rps, p50, p99, gateway, nginx, broker, upstream = med[(connections, target)]
        ours = target in ("callproof", "acks")
        print(f"| {connections} | {target} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | "
              f"{gateway if ours else 0:,.0f} | "
              f"{nginx if target == 'nginx' or not mcp and not ours else 0:,.0f} | "
              f"{broker if ours else 0:,.0f} |" + (f" {upstream:,.0f} |" if mcp else ""))
for connections in (1, 16):
    direct, nginx, ours, acks = (med[(connections, t)] for t in ("direct", "nginx", "callproof", "acks"))
    print(f"{connections} connection(s): callproof serves {ours[0] / nginx[0]:.3f}x nginx and "
          f"{ours[0] / direct[0]:.3f}x direct; adds {ours[1] - direct[1]:,.0f} µs at p50 and "
          f"{ours[2] - direct[2]:,.0f} µs at p99 over the direct call, of which the two "
          f"acknowledgements alone take {acks[1]:,.0f} µs at p50 ({acks[0] / nginx[0]:.3f}x nginx "
          f"with nothing but them)")
EOF

if [ "$stages" = yes ]; then
  echo "where the time goes inside callproof, from its events (bench/call_stages.py, all rounds):"
  python3 bench/call_stages.py "$KAFKA_BROKERS" "$work/windows"
fi
