//! Avro schemas.
