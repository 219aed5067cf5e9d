use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Every event leaves several short-lived buffers behind on other threads than the one that
/// made them: glibc's allocator spent a third of the processor's CPU on them. jemalloc rather
/// than mimalloc, which gave memory back to the kernel between batches and took a quarter of
/// the CPU refaulting (zeroing) huge pages (see processor/README.md, Benchmark).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The callproof processor: masks call events and appends them to signed Merkle logs and the
/// SIEM stream; indexes its partitions' logs into splits unless `index.in_process = false`.
#[derive(Parser)]
#[command(name = "callproof-processor", version)]
struct Args {
    /// The deployment file (TOML); the processor reads `[kafka]`, `[masking]`, `[functions.*]`
    /// (field rules), `[processor]`, `[storage]`, `[log]` and `[index]`.
    #[arg(long, env = "CALLPROOF_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline (the default).
    Run,
    /// Rebuild the index splits of every partition from its log alone (publishes new splits,
    /// then marks the old ones for deletion; running indexers may go on).
    Reindex,
    /// Make a log signing key: writes the private key to FILE (mode 0600) and prints the
    /// verifier key for auditors.
    Keygen {
        /// The key name, which is also the default log origin prefix.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.json_logs);
    if let Some(Command::Keygen { name, out }) = &args.command {
        return match callproof_processor::keygen(name, out) {
            Ok(verifier) => {
                println!("{verifier}");
                eprintln!(
                    "callproof-processor: signing key written to {}",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    let Some(path) = &args.config else {
        eprintln!("callproof-processor: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match callproof_config::Config::load(path, callproof_config::Service::Processor) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("callproof-processor: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("callproof-processor: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Some(Command::Reindex) => {
                let report = callproof_processor::reindex(&config).await?;
                for (partition, entries) in report.partitions {
                    println!("partition {partition}: {entries} entries indexed");
                }
                Ok(())
            }
            _ => {
                let shutdown = shutdown_signal();
                callproof_processor::serve_metrics(config.processor.metrics_listen).await?;
                callproof_processor::run(config, None, shutdown).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &callproof_processor::ProcessorError) -> ExitCode {
    tracing::error!(%error, "stopping");
    eprintln!("callproof-processor: {error}");
    ExitCode::FAILURE
}

/// Installs the signal handlers now (a SIGTERM during start-up must not kill the process
/// with the default action) and returns the future that completes on SIGINT or SIGTERM.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match terminate {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
        tracing::info!("shutdown requested; finishing the batch in hand");
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
