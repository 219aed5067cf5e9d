use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

/// Demo OIDC issuer for the quick start. Mints a token for anyone: never use it in production.
#[derive(Parser)]
#[command(name = "callproof-demo-issuer")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: std::net::SocketAddr,
    /// The issuer URL written into tokens (defaults to http://<listen>).
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value = "callproof")]
    audience: String,
    /// Where the signing key is kept between runs.
    #[arg(long, default_value = ".data/demo")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    callproof_demo::init_tracing();
    let args = Args::parse();
    let url = args
        .url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let issuer =
        callproof_demo::issuer::Issuer::load_or_create(url.clone(), args.audience, &args.data_dir)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::warn!(%url, "demo issuer: mints tokens for anyone, for the quick start only");
    axum::serve(listener, callproof_demo::issuer::router(Arc::new(issuer))).await?;
    Ok(())
}
