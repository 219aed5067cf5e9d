use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The callproof evidence API: search, call timelines, proofs, SOC 2 reports and evidence
/// bundles for auditors. Read-only over the logs and the index splits in the object store.
#[derive(Parser)]
#[command(name = "callproof-evidence", version)]
struct Args {
    /// The deployment file (TOML); the evidence API reads `[evidence]`, `[oidc]`, `storage.url`,
    /// `index.gc_grace_secs` and `[functions.*]` (the policies in force, for reports).
    #[arg(long, env = "CALLPROOF_CONFIG")]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.json_logs);
    let config =
        match callproof_config::Config::load(&args.config, callproof_config::Service::Evidence) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("callproof-evidence: {error}");
                return ExitCode::from(2);
            }
        };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("callproof-evidence: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(callproof_evidence::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callproof-evidence: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
