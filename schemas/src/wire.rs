//! Avro single-object encoding of [`CallEvent`]s.

use std::sync::LazyLock;

use apache_avro::headers::HeaderBuilder;
use apache_avro::{GenericSingleObjectReader, Schema, types::Value};
use serde::ser::{Serialize, SerializeStruct as _, Serializer};
use serde_json::Value as Json;

use crate::CallEvent;

/// The two bytes that open every Avro single-object encoded message.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// The schema this build writes.
pub static CURRENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_builtin_schema(include_str!("../call_event.avsc")));

static CURRENT_FINGERPRINT: LazyLock<[u8; 8]> =
    LazyLock::new(|| schema_fingerprint(include_str!("../call_event.avsc")));

/// Every schema ever released, oldest first, with its fingerprint. Data written with any of them
/// stays readable.
pub static RELEASED_SCHEMAS: LazyLock<Vec<(Schema, [u8; 8])>> = LazyLock::new(|| {
    [
        include_str!("../released/call_event.v1.avsc"),
        include_str!("../released/call_event.v2.avsc"),
    ]
    .into_iter()
    .map(|text| (parse_builtin_schema(text), schema_fingerprint(text)))
    .collect()
});

/// A reader per known writer schema, each holding its schema's resolved names: building them
/// for every message (what `from_avro_datum` does) was 3 % of the processor's CPU.
static READERS: LazyLock<Vec<([u8; 8], &'static Schema, GenericSingleObjectReader)>> =
    LazyLock::new(|| {
        std::iter::once((&*CURRENT_SCHEMA, *CURRENT_FINGERPRINT))
            .chain(
                RELEASED_SCHEMAS
                    .iter()
                    .map(|(schema, fingerprint)| (schema, *fingerprint)),
            )
            .map(|(schema, fingerprint)| {
                let reader = builtin_schema_reader(schema, fingerprint);
                (fingerprint, schema, reader)
            })
            .collect()
    });

/// The single-object header with our own fingerprint (see [`schema_fingerprint`]).
struct Header([u8; 8]);

impl HeaderBuilder for Header {
    fn build_header(&self) -> Vec<u8> {
        [&SINGLE_OBJECT_MARKER[..], &self.0].concat()
    }
}

// The schemas are compiled in and covered by tests, so failing to parse one is a build defect,
// never a runtime condition.
#[allow(clippy::expect_used)]
fn parse_builtin_schema(text: &str) -> Schema {
    Schema::parse_str(text).expect("built-in schema must parse")
}

#[allow(clippy::expect_used)]
fn builtin_schema_reader(schema: &Schema, fingerprint: [u8; 8]) -> GenericSingleObjectReader {
    GenericSingleObjectReader::new_with_header_builder(schema.clone(), Header(fingerprint))
        .expect("built-in schema must resolve")
}

/// The CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, little-endian as in
/// the single-object header.
///
/// Computed here rather than with `Schema::fingerprint`: apache-avro 0.21 keeps logical types as
/// `{"type":"long"}` in the canonical form (AVRO-4004), so its fingerprint of any schema with a
/// `timestamp-micros` differs from every other implementation's and other consumers could not
/// find our schema.
#[allow(clippy::expect_used)]
pub fn schema_fingerprint(schema_text: &str) -> [u8; 8] {
    let schema: Json = serde_json::from_str(schema_text).expect("built-in schema is JSON");
    crc64_avro(parsing_canonical_form(&schema, "").as_bytes()).to_le_bytes()
}

/// The Avro specification's Parsing Canonical Form: only the attributes that matter to parsing,
/// full names, primitives in their simple form, fixed attribute order, no whitespace.
fn parsing_canonical_form(schema: &Json, namespace: &str) -> String {
    match schema {
        Json::String(name) => quoted(&full_name(name, namespace)),
        Json::Array(branches) => {
            let branches: Vec<String> = branches
                .iter()
                .map(|branch| parsing_canonical_form(branch, namespace))
                .collect();
            format!("[{}]", branches.join(","))
        }
        Json::Object(object) => {
            let kind = object
                .get("type")
                .and_then(Json::as_str)
                .unwrap_or_default();
            match kind {
                "record" | "error" | "enum" | "fixed" => {
                    let name = object
                        .get("name")
                        .and_then(Json::as_str)
                        .unwrap_or_default();
                    let own_namespace = object
                        .get("namespace")
                        .and_then(Json::as_str)
                        .unwrap_or(namespace);
                    let name = full_name(name, own_namespace);
                    let inner_namespace = name.rsplit_once('.').map_or("", |(space, _)| space);
                    let mut parts = vec![
                        format!("\"name\":{}", quoted(&name)),
                        format!("\"type\":{}", quoted(kind)),
                    ];
                    if let Some(fields) = object.get("fields").and_then(Json::as_array) {
                        let fields: Vec<String> = fields
                            .iter()
                            .map(|field| {
                                let field_name =
                                    field.get("name").and_then(Json::as_str).unwrap_or_default();
                                format!(
                                    "{{\"name\":{},\"type\":{}}}",
                                    quoted(field_name),
                                    parsing_canonical_form(&field["type"], inner_namespace)
                                )
                            })
                            .collect();
                        parts.push(format!("\"fields\":[{}]", fields.join(",")));
                    }
                    if let Some(symbols) = object.get("symbols") {
                        parts.push(format!("\"symbols\":{symbols}"));
                    }
                    if let Some(size) = object.get("size") {
                        parts.push(format!("\"size\":{size}"));
                    }
                    format!("{{{}}}", parts.join(","))
                }
                "array" => format!(
                    "{{\"type\":\"array\",\"items\":{}}}",
                    parsing_canonical_form(&object["items"], namespace)
                ),
                "map" => format!(
                    "{{\"type\":\"map\",\"values\":{}}}",
                    parsing_canonical_form(&object["values"], namespace)
                ),
                // A primitive, possibly with a logical type: its simple form.
                primitive => quoted(primitive),
            }
        }
        other => other.to_string(),
    }
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn full_name(name: &str, namespace: &str) -> String {
    if PRIMITIVES.contains(&name) || name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

fn quoted(text: &str) -> String {
    Json::String(text.to_string()).to_string()
}

/// CRC-64-AVRO, as given in the Avro specification.
fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: LazyLock<[u64; 256]> = LazyLock::new(|| {
        let mut table = [0u64; 256];
        for (index, entry) in table.iter_mut().enumerate() {
            let mut fingerprint = index as u64;
            for _ in 0..8 {
                fingerprint = (fingerprint >> 1) ^ (EMPTY & (0u64.wrapping_sub(fingerprint & 1)));
            }
            *entry = fingerprint;
        }
        table
    });
    bytes.iter().fold(EMPTY, |fingerprint, &byte| {
        (fingerprint >> 8) ^ TABLE[((fingerprint ^ u64::from(byte)) & 0xff) as usize]
    })
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
    #[error("message ends before the event does")]
    Truncated,
}

/// Encodes an event with the current schema in the Avro single-object encoding.
///
/// The event is serialised straight into the message by apache-avro's schema-aware serde
/// serializer (`write_avro_datum_ref`). The way before, `to_value` then `Value::resolve` then
/// `to_avro_datum`, built the schema's name table three times per event (resolve, validate,
/// encode) and hashed every record field by name: 7 % of the gateway's CPU (issue 17).
///
/// What that serializer does not check, the tests do (`encode_writes_what_the_resolving_encoder_wrote`
/// compares the bytes with the old way's over varied events): it writes a record's fields in the
/// order they are serialised and an enum as its variant's index, so the Rust types declare fields
/// and variants in the schema's order ([`AvroEvent`] writes the top level explicitly), and it
/// knows no named type the schema refers to by name (ours defines each where it is used). It also
/// splits an array of more than 1,024 items into blocks of 1,024 where the old way wrote one
/// block: other bytes, the same data for every Avro reader.
pub fn encode(event: &CallEvent) -> Result<Vec<u8>, EncodeError> {
    let mut message = Vec::with_capacity(HEADER_LEN + encoded_size_hint(event));
    message.extend_from_slice(&SINGLE_OBJECT_MARKER);
    message.extend_from_slice(&*CURRENT_FINGERPRINT);
    apache_avro::write_avro_datum_ref(&CURRENT_SCHEMA, &AvroEvent(event), &mut message)
        .map_err(|error| EncodeError::Schema(Box::new(error)))?;
    Ok(message)
}

/// Enough for an event without bodies, plus its bodies, so the message is allocated once.
fn encoded_size_hint(event: &CallEvent) -> usize {
    let body = |body: Option<&String>| body.map_or(0, String::len);
    512 + body(
        event
            .request
            .as_ref()
            .and_then(|request| request.body.as_ref()),
    ) + body(
        event
            .response
            .as_ref()
            .and_then(|response| response.body.as_ref()),
    )
}

/// A [`CallEvent`] as the Avro record: every field, in the schema's order, `mcp` included when
/// `None` (the derived `Serialize` skips it then, for the JSON of log entries, and apache-avro's
/// serializer writes a skipped field's default, which it gets wrong for a union whose default is
/// null: it writes the null as the record branch and fails).
struct AvroEvent<'a>(&'a CallEvent);

impl Serialize for AvroEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Destructured without `..`: a field added to the event does not compile until it is
        // written here.
        let CallEvent {
            event_id,
            call_id,
            seq,
            kind,
            time,
            gateway,
            function,
            principal,
            request,
            response,
            decision,
            approval,
            failure,
            masking,
            mcp,
        } = self.0;
        let mut record = serializer.serialize_struct("CallEvent", 15)?;
        record.serialize_field("event_id", event_id)?;
        record.serialize_field("call_id", call_id)?;
        record.serialize_field("seq", seq)?;
        record.serialize_field("kind", kind)?;
        record.serialize_field("time", time)?;
        record.serialize_field("gateway", gateway)?;
        record.serialize_field("function", function)?;
        record.serialize_field("principal", principal)?;
        record.serialize_field("request", request)?;
        record.serialize_field("response", response)?;
        record.serialize_field("decision", decision)?;
        record.serialize_field("approval", approval)?;
        record.serialize_field("failure", failure)?;
        record.serialize_field("masking", masking)?;
        record.serialize_field("mcp", mcp)?;
        record.end()
    }
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
    let header = &message[..HEADER_LEN];
    if header[..2] != SINGLE_OBJECT_MARKER {
        return Err(DecodeError::NotSingleObject);
    }
    let fingerprint = &header[2..];
    let (writer_schema, reader) = READERS
        .iter()
        .find(|(known, _, _)| known.as_slice() == fingerprint)
        .map(|(_, schema, reader)| (*schema, reader))
        .ok_or_else(|| DecodeError::UnknownSchema(hex(fingerprint)))?;
    let mut body = EndAware {
        rest: message,
        ran_past_end: false,
    };
    let value = reader
        .read_value(&mut body)
        .map_err(|error| DecodeError::Body(Box::new(error)))?;
    if body.ran_past_end {
        return Err(DecodeError::Truncated);
    }
    if !body.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(body.rest.len()));
    }
    // Resolving a schema against itself changes nothing but costs about a tenth of the
    // processor's CPU (profiled), so data written with the reader's own schema is read as is.
    if std::ptr::eq(writer_schema, reader_schema) {
        return Ok(value);
    }
    let value = value
        .resolve(reader_schema)
        .map_err(|error| DecodeError::Body(Box::new(error)))?;
    Ok(value)
}

/// The message as the Avro reader reads it, noting whether the reader asked for more than there
/// was. apache-avro 0.21 reads a union at the end of its input as its null branch (`decode.rs`:
/// an EOF while reading the branch index gives `Union(0, Null)`), so a message cut just before
/// a trailing optional field such as `mcp`, or between the fields of that record, would decode
/// with those fields missing instead of failing. A whole message never makes the reader read
/// past its end.
struct EndAware<'a> {
    rest: &'a [u8],
    ran_past_end: bool,
}

impl std::io::Read for EndAware<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.ran_past_end = true;
        }
        self.rest.read(buf)
    }
}

/// The first fields of an event, read without decoding the rest: every released schema starts
/// with `event_id`, `call_id`, `seq`, `kind`, `time` (fields are only ever added after them),
/// so the processor can number a call's events in partition order before the full decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHead<'a> {
    pub call_id: &'a str,
    pub seq: i32,
    /// Microseconds since the Unix epoch.
    pub time: i64,
}

/// Reads an event's [`EventHead`]; `None` if the message is not a call event of a known schema
/// (the full decode then says why).
pub fn peek_head(message: &[u8]) -> Option<EventHead<'_>> {
    let header = message.get(..HEADER_LEN)?;
    if header[..2] != SINGLE_OBJECT_MARKER
        || !READERS
            .iter()
            .any(|(known, _, _)| known.as_slice() == &header[2..])
    {
        return None;
    }
    let mut rest = &message[HEADER_LEN..];
    let _event_id = read_avro_string(&mut rest)?;
    let call_id = read_avro_string(&mut rest)?;
    let seq = i32::try_from(read_avro_long(&mut rest)?).ok()?;
    let _kind = read_avro_long(&mut rest)?;
    let time = read_avro_long(&mut rest)?;
    Some(EventHead { call_id, seq, time })
}

/// An Avro `long` (or `int`): a zig-zag varint of at most 10 bytes.
fn read_avro_long(bytes: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// An Avro `string`: its length as a `long`, then UTF-8 bytes.
fn read_avro_string<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let len = usize::try_from(read_avro_long(bytes)?).ok()?;
    let (text, rest) = bytes.split_at_checked(len)?;
    *bytes = rest;
    std::str::from_utf8(text).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
