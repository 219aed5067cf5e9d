use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

/// Demo OIDC issuer for the quick start. Mints a token for anyone and signs anyone in without a
/// password: never use it in production.
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
    /// Another audience a token may be asked for with `GET /token?resource=<URI>` (RFC 8707),
    /// such as the gateway's MCP endpoint. Repeatable; no other is minted.
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// Where the signing key is kept between runs.
    #[arg(long, default_value = ".data/demo")]
    data_dir: PathBuf,
    /// The client id of the console that signs people in here.
    #[arg(long, default_value = "callproof-console")]
    console_client_id: String,
    /// The console's client secret; without it, sign-in is refused.
    #[arg(long, env = "CONSOLE_CLIENT_SECRET", hide_env_values = true)]
    console_client_secret: Option<String>,
    /// The console's redirect URL, compared exactly with each sign-in's.
    #[arg(long, default_value = "http://127.0.0.1:8082/auth/callback")]
    console_redirect_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    callproof_demo::init_tracing();
    let args = Args::parse();
    let url = args
        .url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let mut issuer =
        callproof_demo::issuer::Issuer::load_or_create(url.clone(), args.audience, &args.data_dir)?
            .with_resources(args.resources);
    if let Some(secret) = args.console_client_secret {
        issuer = issuer.with_client(callproof_demo::signin::Client {
            id: args.console_client_id,
            secret,
            redirect_url: args.console_redirect_url,
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::warn!(%url, "demo issuer: mints tokens for anyone and signs anyone in, for the quick start only");
    axum::serve(listener, callproof_demo::issuer::router(Arc::new(issuer))).await?;
    Ok(())
}
