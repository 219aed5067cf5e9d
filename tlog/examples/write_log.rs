//! Writes a demo log to a directory, for trying `callproof-verify` on a log of any size:
//!
//! ```sh
//! cargo run -p callproof-tlog --example write_log -- /tmp/demo-log 100000 1000
//! callproof-verify log --key /tmp/demo-log.pub /tmp/demo-log
//! ```
//!
//! Arguments: directory, number of entries, batch size. The verifier key is written next
//! to the directory as `<dir>.pub`.

use std::sync::Arc;

use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::LogWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: write_log DIR [ENTRIES] [BATCH]")?;
    let n_entries: u64 = args.next().map_or(Ok(1000), |arg| arg.parse())?;
    let batch_size: u64 = args.next().map_or(Ok(1000), |arg| arg.parse())?;
    std::fs::create_dir_all(&dir)?;
    let origin = "callproof.example/demo-log";
    let (signer_key, verifier_key) = NoteSigner::generate(origin)?;
    std::fs::write(format!("{dir}.pub"), format!("{verifier_key}\n"))?;
    let store = Arc::new(LocalFileSystem::new_with_prefix(&dir)?);
    let mut writer =
        LogWriter::open(store, Path::default(), signer_key.parse()?, origin.into()).await?;
    let started = std::time::Instant::now();
    let mut next = 0;
    while next < n_entries {
        let end = (next + batch_size).min(n_entries);
        let batch: Vec<Vec<u8>> = (next..end)
            .map(|index| format!("{{\"call\":{index},\"function\":\"demo\"}}").into_bytes())
            .collect();
        writer
            .append(&batch, &[format!("demo-offset {end}")])
            .await?;
        next = end;
    }
    eprintln!(
        "wrote {n_entries} entries in {:.2?}; key {verifier_key}",
        started.elapsed()
    );
    Ok(())
}
