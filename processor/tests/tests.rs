//! Integration tests of the processor against the real broker (`KAFKA_BROKERS`, default
//! `127.0.0.1:9092`). Each test makes its own topics, store, index and key.

mod support;

mod exactly_once;
mod masking;
mod metrics;
mod ocsf;
mod reindex;
mod sequencing;
mod siem_limits;
mod startup;
mod store_failures;
