use clap::Parser;

/// Demo MCP server for the quick start: `lookup_customer`, `refund` and `echo` over Streamable
/// HTTP at /mcp, for the gateway only.
#[derive(Parser)]
#[command(name = "callproof-demo-mcp")]
struct Args {
    /// A loopback address: the server accepts loopback `Host`s only.
    #[arg(long, default_value = "127.0.0.1:9600")]
    listen: std::net::SocketAddr,
    /// The credential the gateway presents (`[mcp.servers.demo].credential`); requests without
    /// it are refused.
    #[arg(long, env = "DEMO_MCP_TOKEN", hide_env_values = true)]
    expected_token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    callproof_demo::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %args.listen, "demo MCP server listening at /mcp");
    // Its answers are SSE, several small writes: without TCP_NODELAY each waits for the
    // client's delayed ACK (40 ms), which made it look slower than the gateway in front of it.
    let listener = axum::serve::ListenerExt::tap_io(listener, |connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, callproof_demo::mcp::router(args.expected_token)).await?;
    Ok(())
}
