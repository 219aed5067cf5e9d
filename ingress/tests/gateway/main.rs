//! The gateway served in-process against the real broker, a local issuer and a local function
//! service. One harness per test, each with a topic of its own, so tests run in parallel on one
//! broker.

mod approvals;
mod audit;
mod auth;
mod errors;
mod harness;
mod instances;
mod mcp;
mod mcp_upstream;
mod policy;
