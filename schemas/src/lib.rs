//! The call lifecycle event of callproof and its wire format.
//!
//! Every step of a function call through the gateway is one [`CallEvent`], described by the Avro
//! schema `schemas/call_event.avsc`. On Kafka an event travels in the Avro single-object encoding
//! (`0xC3 0x01`, the CRC-64-AVRO fingerprint of the writer schema, then the Avro binary datum), so
//! a consumer knows which schema wrote it without a registry.
//!
//! The schema evolves only by adding fields with defaults. Every released version is kept under
//! `schemas/released/` and compiled into [`RELEASED_SCHEMAS`]: [`decode`] reads data written with
//! any of them, and the tests hold each released schema able to read current data.
//!
//! Only this crate touches Avro.

mod event;
mod wire;

pub use event::{
    Actor, Approval, ApprovalDecision, Authentication, CallEvent, Decision, EventKind, Failure,
    MaskingFinding, Mcp, McpOutcome, Principal, Request, Response,
};
pub use wire::{
    CURRENT_SCHEMA, DecodeError, EncodeError, EventHead, RELEASED_SCHEMAS, SINGLE_OBJECT_MARKER,
    decode, encode, peek_head, schema_fingerprint,
};

/// The Kafka topic that carries raw (inline-masked) call events, keyed by call id.
pub const CALLS_TOPIC: &str = "callproof.calls.v1";
/// The Kafka topic that carries fully masked events in OCSF form for SIEMs.
pub const SIEM_TOPIC: &str = "callproof.siem.v1";
