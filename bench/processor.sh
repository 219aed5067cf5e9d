#!/usr/bin/env bash
# Processor throughput and lag on the broker at $KAFKA_BROKERS (default 127.0.0.1:9092), with a
# consume-only baseline measured in the same run. Rerunnable: every run uses new topics.
#   bench/processor.sh [--events N] [--partitions P] [--lag-rate R] [--lag-seconds S]
#                      [--index in-process|elsewhere|both]   (default both: one run of each)
# bench/evidence.sh runs it with --searchable too (produce → searchable through the evidence API).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p callproof-processor --bin callproof-processor --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/bench" --binary "$target_dir/release/callproof-processor" "$@"
