//! The quick start's stand-ins for the parts a real deployment brings: an identity provider, the
//! functions agents call, and an MCP server whose tools they call. All are real HTTP services,
//! so the gateway is exercised exactly as in production; none is fit for production (the
//! issuer mints a token for anyone who asks and signs anyone in).

pub mod function;
pub mod issuer;
pub mod mcp;
pub mod signin;

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
