//! Decoder: Kafka message payloads to call events.

use callproof_schemas::CallEvent;
use sha2::{Digest as _, Sha256};

use callproof_evidence_format::entry::KafkaSource;

/// One consumed message, copied out of the consumer's buffers.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub source: KafkaSource,
    pub payload: Vec<u8>,
    /// The message's Kafka timestamp (producer create time), for the lag metrics.
    pub timestamp_ms: Option<i64>,
}

/// What a payload turned out to be.
#[derive(Debug, Clone)]
pub enum Decoded {
    Event(Box<CallEvent>),
    /// Not a call event. Recorded in the log all the same (without the payload, which could
    /// hold anything), so that the log accounts for every message of its partition.
    Undecodable {
        reason: String,
        payload_sha256: String,
        payload_bytes: usize,
    },
}

/// Decodes the Avro single-object payloads written by the gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decoder;

impl Decoder {
    pub fn decode(&self, payload: &[u8]) -> Decoded {
        match callproof_schemas::decode(payload) {
            Ok(event) => Decoded::Event(Box::new(event)),
            // The schemas crate's messages describe the structure, never the content.
            Err(error) => Decoded::Undecodable {
                reason: error.to_string(),
                payload_sha256: hex::encode(Sha256::digest(payload)),
                payload_bytes: payload.len(),
            },
        }
    }
}
