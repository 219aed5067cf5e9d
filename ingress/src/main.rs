use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Each call allocates and frees many small buffers (headers, JSON, events) across the runtime's
/// threads and librdkafka's: glibc's allocator took about a tenth of the gateway's CPU on them
/// (bench/gateway.sh under `perf`). jemalloc, as the processor uses.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The callproof gateway.
#[derive(Parser)]
#[command(name = "callproof-ingress", version)]
struct Args {
    /// The deployment file (TOML); the gateway reads `[ingress]`, `[oidc]`, `[kafka]`,
    /// `[masking]` and `[functions.*]`.
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
        match callproof_config::Config::load(&args.config, callproof_config::Service::Ingress) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("callproof-ingress: {error}");
                return ExitCode::from(2);
            }
        };
    let runtime = match callproof_ingress::runtime(&config.ingress) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("callproof-ingress: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(callproof_ingress::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callproof-ingress: {error:#}");
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
