use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The callproof console: the approvers' and auditors' pages.
#[derive(Parser)]
#[command(name = "callproof-console", version)]
struct Args {
    /// The deployment file (TOML); the console reads `[console]` and `[oidc]`.
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
        match callproof_config::Config::load(&args.config, callproof_config::Service::Console) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("callproof-console: {error}");
                return ExitCode::from(2);
            }
        };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("callproof-console: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(callproof_console::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callproof-console: {error:#}");
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
