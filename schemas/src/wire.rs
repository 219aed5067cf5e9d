//! Avro single-object encoding of [`CallEvent`]s.

use std::sync::LazyLock;

use apache_avro::{Schema, rabin::Rabin, types::Value};

use crate::CallEvent;

/// The two bytes that open every Avro single-object encoded message.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// The schema this build writes.
pub static CURRENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_builtin_schema(include_str!("../call_event.avsc")));

/// Every schema ever released, oldest first. Data written with any of them stays readable.
pub static RELEASED_SCHEMAS: LazyLock<Vec<Schema>> = LazyLock::new(|| {
    [include_str!("../released/call_event.v1.avsc")]
        .into_iter()
        .map(parse_builtin_schema)
        .collect()
});

// The schemas are compiled in and covered by tests, so failing to parse one is a build defect,
// never a runtime condition.
#[allow(clippy::expect_used)]
fn parse_builtin_schema(text: &str) -> Schema {
    Schema::parse_str(text).expect("built-in schema must parse")
}

/// The CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form, little-endian as in
/// the single-object header.
pub fn schema_fingerprint(schema: &Schema) -> [u8; 8] {
    let fingerprint = schema.fingerprint::<Rabin>();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&fingerprint.bytes[..8]);
    bytes
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("event does not fit the call event schema: {0}")]
    Schema(#[source] Box<apache_avro::Error>),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {0} bytes, shorter than the 10-byte single-object header")]
    TooShort(usize),
    #[error("message does not start with the Avro single-object marker C3 01")]
    NotSingleObject,
    #[error("message was written with an unknown schema (fingerprint {0})")]
    UnknownSchema(String),
    #[error("message body is not a valid call event: {0}")]
    Body(#[source] Box<apache_avro::Error>),
    #[error("message has {0} trailing bytes after the event")]
    TrailingBytes(usize),
}

/// Encodes an event with the current schema in the Avro single-object encoding.
pub fn encode(event: &CallEvent) -> Result<Vec<u8>, EncodeError> {
    let schema = &*CURRENT_SCHEMA;
    let value = apache_avro::to_value(event)
        .and_then(|value| value.resolve(schema))
        .map_err(|error| EncodeError::Schema(Box::new(error)))?;
    let datum = apache_avro::to_avro_datum(schema, value)
        .map_err(|error| EncodeError::Schema(Box::new(error)))?;
    let mut message = Vec::with_capacity(HEADER_LEN + datum.len());
    message.extend_from_slice(&SINGLE_OBJECT_MARKER);
    message.extend_from_slice(&schema_fingerprint(schema));
    message.extend_from_slice(&datum);
    Ok(message)
}

/// Decodes a single-object encoded event written with the current or any released schema,
/// resolving it to the current schema.
pub fn decode(message: &[u8]) -> Result<CallEvent, DecodeError> {
    let value = decode_value(message, &CURRENT_SCHEMA)?;
    apache_avro::from_value(&value).map_err(|error| DecodeError::Body(Box::new(error)))
}

/// Decodes to a generic Avro value read with `reader_schema`; the writer schema is found from the
/// fingerprint among the current and released schemas.
pub(crate) fn decode_value(message: &[u8], reader_schema: &Schema) -> Result<Value, DecodeError> {
    if message.len() < HEADER_LEN {
        return Err(DecodeError::TooShort(message.len()));
    }
    let (header, mut body) = message.split_at(HEADER_LEN);
    if header[..2] != SINGLE_OBJECT_MARKER {
        return Err(DecodeError::NotSingleObject);
    }
    let fingerprint = &header[2..];
    let writer_schema = std::iter::once(&*CURRENT_SCHEMA)
        .chain(RELEASED_SCHEMAS.iter())
        .find(|schema| schema_fingerprint(schema) == fingerprint)
        .ok_or_else(|| DecodeError::UnknownSchema(hex(fingerprint)))?;
    let value = apache_avro::from_avro_datum(writer_schema, &mut body, Some(reader_schema))
        .map_err(|error| DecodeError::Body(Box::new(error)))?;
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes(body.len()));
    }
    Ok(value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
