#!/usr/bin/env bash
# Issue 19's figures, each measured in one run against a baseline of the same run:
#  1. anchoring throughput of callproof-processor with the index built elsewhere
#     (`[index] in_process = false`) and, for comparison, in process, on a backlog of 1 KiB
#     events, against a consume-only rdkafka reader of the same topic (processor/examples/bench.rs);
#  2. produce ack → searchable through callproof-evidence (polled every 25 ms for the searchable
#     sizes of its search answers) at 5,000 events/s, broker, processor (index in process),
#     evidence API and demo issuer all on this machine, default split_interval_ms (1,000) and
#     index_refresh_ms (2,000) (same example, --searchable);
#  3. indexing throughput on its own: the indexer's rebuild of one partition's log into splits
#     (indexer/examples/throughput.rs);
#  4. search p50/p99 over 1M events in splits from the object store (through the evidence API's
#     cache) against one local tantivy index of the same documents (evidence-api/benches/search.rs;
#     the indexes are built once under the target dir, then reused).
#
#   bench/evidence.sh [--only processor|indexer|search] [--events N] [--search-events N]
#
# Uses the broker at $KAFKA_BROKERS, or starts a local Tansu (scripts/broker.sh) for the run.
# Figures of 2026-12-02, 2-core development machine (other engineers' builds and tests were
# running beside it, so the rates are low bounds): see the bottom of this file.
set -euo pipefail
cd "$(dirname "$0")/.."
only="" events=100000 search_events=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --events) events="$2"; shift 2 ;;
    --search-events) search_events="$2"; shift 2 ;;
    *) echo "usage: $0 [--only processor|indexer|search] [--events N] [--search-events N]" >&2; exit 2 ;;
  esac
done
target_dir="${CARGO_TARGET_DIR:-target}"
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

if want processor; then
  cargo build --release -p callproof-processor -p callproof-evidence -p callproof-demo \
    --bin callproof-processor --bin callproof-evidence --bin callproof-demo-issuer --example bench
  if [ -z "${KAFKA_BROKERS:-}" ]; then
    . scripts/broker.sh && broker_start
    trap broker_stop EXIT
  fi
  echo "== 1, 2: processor throughput (index elsewhere, in process) and produce → searchable"
  "$target_dir/release/examples/bench" --binary "$target_dir/release/callproof-processor" \
    --events "$events" --index both --searchable --lag-rate 5000 --lag-seconds 20
fi
if want indexer; then
  echo "== 3: indexing throughput on its own (one partition's log → splits)"
  cargo run --release -p callproof-indexer --example throughput -- --events 200000
fi
if want search; then
  echo "== 4: search over $search_events events: splits from the object store vs one local index"
  CALLPROOF_BENCH_EVENTS="$search_events" cargo bench -p callproof-evidence --bench search
fi

# Figures (2026-12-02):
#  1. backlog, 100k events (3 runs): consume-only 38,092–39,024 events/s; processor with the
#     index elsewhere 17,914–22,621 from its start (22,620–32,073 after its first checkpoint,
#     1.1 cores); index in process 12,757–15,104 (14,949–18,268, 1.5 cores). 300k events (1 run,
#     load 3.4–4.6): 42,317; elsewhere 18,195 (19,654); in process 12,486 (13,102).
#  2. at 5,000 events/s: produce → checkpoint p50 225–290 ms, p99 430–740 ms; produce ack →
#     searchable through the evidence API p50 1.6–1.9 s, p99 2.7–3.3 s (4 runs).
#  3. indexing on its own: 36,176–41,107 entries/s of 1.2 KiB (3 runs).
#  4. 1M events, page of 50 newest first (2 runs): splits p99 match-all 21.0–21.1 ms, filtered
#     4.0–4.3 ms; one local index 19.8–20.0 ms, 3.8–4.9 ms (ratio 0.88–1.07).
# Details: processor/README.md ("2026-12-02"), evidence-api/README.md ("Figures").
