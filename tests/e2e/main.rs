//! End-to-end tests across the real stack: the callproof binaries as child processes, the Tansu
//! broker, a local OIDC issuer and a local function service, checked from the outside with
//! independent clients.

mod events;
mod gateway;
mod kafka_tls;
mod quickstart;
mod readonly_index;
mod scale;
