#!/usr/bin/env python3
"""Reads callproof call events from Kafka with clients independent of callproof's own code:
confluent-kafka for the broker and fastavro for the Avro single-object encoding.

usage: read_events.py BROKERS TOPIC SCHEMA_FILE EXPECTED TIMEOUT_SECONDS
Prints one JSON object per event: {"partition", "offset", "key", "event"}.
Exits 1 if a message is not a valid single-object encoded event of SCHEMA_FILE.
"""
import io
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form


def main():
    brokers, topic, schema_file, expected, timeout = sys.argv[1:6]
    with open(schema_file) as handle:
        schema = parse_schema(json.load(handle))
    # fastavro gives the fingerprint as the hex of its little-endian bytes, as the header has it.
    expected_fingerprint = bytes.fromhex(
        fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    )
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"e2e-reader-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    deadline = time.time() + float(timeout)
    seen = 0
    try:
        while seen < int(expected) and time.time() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            payload = message.value()
            if payload[:2] != b"\xc3\x01":
                sys.exit(f"offset {message.offset()}: not an Avro single-object message")
            if payload[2:10] != expected_fingerprint:
                sys.exit(f"offset {message.offset()}: fingerprint {payload[2:10].hex()} is not the schema's")
            event = schemaless_reader(io.BytesIO(payload[10:]), schema)
            print(json.dumps({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().decode() if message.key() else None,
                "event": event,
            }, default=str), flush=True)
            seen += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
