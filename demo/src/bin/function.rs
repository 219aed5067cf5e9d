use std::sync::Arc;

use clap::Parser;

/// Demo function service for the quick start: a customer lookup and a refund.
#[derive(Parser)]
#[command(name = "callproof-demo-function")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9500")]
    listen: std::net::SocketAddr,
    /// The service credential the gateway injects; calls without it are refused.
    #[arg(long, env = "DEMO_FUNCTION_TOKEN")]
    expected_token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    callproof_demo::init_tracing();
    let args = Args::parse();
    let functions = callproof_demo::function::Functions {
        expected_token: args.expected_token,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %args.listen, "demo functions listening");
    axum::serve(
        listener,
        callproof_demo::function::router(Arc::new(functions)),
    )
    .await?;
    Ok(())
}
