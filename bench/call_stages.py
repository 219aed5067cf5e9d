#!/usr/bin/env python3
"""Where a call's time goes inside the gateway, read from the events of a bench/gateway.sh run
(`--stages`), with clients independent of callproof: confluent-kafka and fastavro.

usage: call_stages.py BROKERS WINDOWS
WINDOWS: lines "connections start_micros end_micros", one per callproof round.

Per connection count, over the calls of bench-gateway whose `call_received` falls in a window:
- upstream: the function's or MCP server's answer as the gateway timed it
  (`response.latency_micros`);
- first ack and around: from `call_forwarded` to `call_completed`, less the upstream: the
  broker acknowledging `call_received` and `call_forwarded`, and the gateway's own work on
  either side of the upstream call (for MCP, its tasks and the rmcp client around it).
The second acknowledgement, after `call_completed` is built, leaves no timestamp of its own.
"""
import io
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from fastavro import parse_schema, schemaless_reader

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "call_event.avsc"
# The Avro single-object header: 2 marker bytes and the 8-byte schema fingerprint.
HEADER = 10


def micros(value):
    return value if isinstance(value, int) else int(value.timestamp() * 1_000_000)


def read_calls(brokers):
    schema = parse_schema(json.loads(SCHEMA.read_text()))
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"call-stages-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe(["callproof.calls.v1"])
    calls = {}
    last_message = time.time()
    try:
        while time.time() - last_message < 5:
            messages = consumer.consume(1000, 0.5)
            if messages:
                last_message = time.time()
            for message in messages:
                if message.error():
                    continue
                event = schemaless_reader(io.BytesIO(message.value()[HEADER:]), schema)
                if event["gateway"] == "bench-gateway":
                    calls.setdefault(event["call_id"], {})[event["kind"]] = event
    finally:
        consumer.close()
    return calls


def main():
    brokers, windows_file = sys.argv[1:3]
    windows = [tuple(int(v) for v in line.split()) for line in open(windows_file) if line.strip()]
    stages = {}
    for events in read_calls(brokers).values():
        if not all(k in events for k in ("call_received", "call_forwarded", "call_completed")):
            continue
        received = micros(events["call_received"]["time"])
        forwarded = micros(events["call_forwarded"]["time"])
        completed = micros(events["call_completed"]["time"])
        upstream = events["call_completed"]["response"]["latency_micros"]
        for connections, start, end in windows:
            if start <= received <= end:
                stages.setdefault(connections, []).append((upstream, completed - forwarded - upstream))
    print("| connections | calls | upstream p50 µs | upstream p99 µs | first ack and around p50 µs |")
    print("|---|---:|---:|---:|---:|")
    for connections in sorted(stages):
        upstream, around = (sorted(column) for column in zip(*stages[connections]))
        p99 = upstream[min(len(upstream) - 1, len(upstream) * 99 // 100)]
        print(f"| {connections} | {len(upstream):,} | {statistics.median(upstream):,.0f} | {p99:,.0f} | "
              f"{statistics.median(around):,.0f} |")


if __name__ == "__main__":
    main()
