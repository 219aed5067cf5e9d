//! `callproof-verify`: offline verification of callproof logs, proofs, checkpoints and evidence
//! bundles.
//!
//! Exit status: 0 when everything verifies, 1 when something does not (the message says what
//! and in which file), 2 for usage errors (bad arguments, unreadable or malformed key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use callproof_tlog::audit::{AuditFailure, audit_log_dir};
use callproof_tlog::bundle::{BundleReport, read_bundle, verify_bundle};
use callproof_tlog::checkpoint::Checkpoint;
use callproof_tlog::hash::{EMPTY_ROOT, leaf_hash, to_base64};
use callproof_tlog::note::{NoteVerifier, SignedNote};
use callproof_tlog::proof::{TlogProof, parse_consistency_proof, verify_consistency};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Verifies callproof transparency logs (C2SP tlog-tiles), inclusion proofs
/// (c2sp.org/tlog-proof@v1) and consistency proofs, offline.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Audit a whole log directory: checkpoint signature, every entry bundle and tile, the
    /// root, and every kept checkpoint (`checkpoints/<size>` or `checkpoint.<size>`).
    Log {
        /// The log's verifier key (`name+keyid+base64`), or a file containing it.
        #[arg(long)]
        key: String,
        /// Do not report progress on stderr.
        #[arg(long)]
        quiet: bool,
        /// The log directory (the one holding `checkpoint` and `tile/`).
        path: PathBuf,
    },
    /// Verify that an entry is in the log: a c2sp.org/tlog-proof@v1 file, which carries
    /// the signed checkpoint.
    Proof {
        /// The log's verifier key (`name+keyid+base64`), or a file containing it.
        #[arg(long)]
        key: String,
        /// The entry, byte for byte.
        entry_file: PathBuf,
        /// The tlog-proof file.
        proof_file: PathBuf,
    },
    /// Verify that the old checkpoint's tree is a prefix of the new one's. The proof file
    /// holds one base64 hash per line (RFC 6962 section 2.1.2 order); it is empty when the
    /// sizes are equal or the old size is 0.
    Consistency {
        /// The log's verifier key (`name+keyid+base64`), or a file containing it.
        #[arg(long)]
        key: String,
        old_checkpoint: PathBuf,
        new_checkpoint: PathBuf,
        proof_file: PathBuf,
    },
    /// Verify an evidence bundle (`GET /v1/export` of the evidence API, a .tar.gz): every
    /// checkpoint signature, inclusion proof, consistency proof and blob hash; that every entry
    /// between each partition's two kept checkpoints is there and nothing else is; that the
    /// edge entries just outside them are outside the period; that report.json names the key
    /// given; and the report, recomputed from the entries and compared with report.json and
    /// report.html. Older bundle formats are refused, saying so.
    /// Every failure is listed, naming the partition, the entry index and the file, or the
    /// report's section and figure.
    Bundle {
        /// The log's verifier key (`name+keyid+base64`), or a file containing it. Use the key
        /// you were given, not the one inside the bundle.
        #[arg(long)]
        key: String,
        /// The bundle (.tar.gz).
        file: PathBuf,
    },
}

/// Why the run did not succeed.
enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Something did not verify: exit 1.
    Invalid { file: String, reason: String },
    /// Several things in a bundle did not verify: exit 1.
    Bundle {
        file: String,
        report: Box<BundleReport>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse(); // clap exits with 2 on usage errors
    let json = args.json;
    match run(args) {
        Ok(summary) => {
            if json {
                let mut summary = summary;
                summary["valid"] = Value::Bool(true);
                println!("{summary}");
            } else if let Some(message) = summary.get("message").and_then(Value::as_str) {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            if json {
                println!("{}", json!({ "valid": false, "usage_error": message }));
            }
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Invalid { file, reason }) => {
            if json {
                println!(
                    "{}",
                    json!({ "valid": false, "file": file, "error": reason })
                );
            } else {
                println!("INVALID: {file}: {reason}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Bundle { file, report }) => {
            if json {
                let mut summary = serde_json::to_value(&*report).unwrap_or_default();
                summary["valid"] = Value::Bool(false);
                summary["file"] = Value::String(file);
                println!("{summary}");
            } else {
                for warning in &report.warnings {
                    eprintln!("warning: {warning}");
                }
                for problem in &report.problems {
                    println!("INVALID: {problem}");
                }
                println!(
                    "{file}: {} problem(s); {} entries, {} edge entries, {} checkpoints, {} consistency proofs and {} blobs verified",
                    report.problems.len(),
                    report.entries_verified,
                    report.edges_verified,
                    report.checkpoints_verified,
                    report.consistency_proofs_verified,
                    report.blobs_verified
                );
            }
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<Value, Failure> {
    match args.command {
        Command::Log { key, quiet, path } => audit(&load_key(&key)?, &path, quiet),
        Command::Proof {
            key,
            entry_file,
            proof_file,
        } => verify_proof(&load_key(&key)?, &entry_file, &proof_file),
        Command::Consistency {
            key,
            old_checkpoint,
            new_checkpoint,
            proof_file,
        } => verify_consistency_files(
            &load_key(&key)?,
            &old_checkpoint,
            &new_checkpoint,
            &proof_file,
        ),
        Command::Bundle { key, file } => verify_bundle_file(&load_key(&key)?, &file),
    }
}

fn verify_bundle_file(key: &NoteVerifier, path: &Path) -> Result<Value, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|error| invalid(path, format!("cannot read: {error}")))?;
    let files = read_bundle(std::io::BufReader::new(file)).map_err(|error| invalid(path, error))?;
    let report = verify_bundle(&files, key);
    if !report.is_valid() {
        return Err(Failure::Bundle {
            file: path.display().to_string(),
            report: Box::new(report),
        });
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let mut summary = serde_json::to_value(&report).unwrap_or_default();
    summary["command"] = json!("bundle");
    summary["message"] = json!(format!(
        "OK: {} ({} to {}): {} entries, {} edge entries, {} checkpoints, {} consistency proofs and {} blobs verified in {} partition(s), every entry between the kept checkpoints present and the edges outside the period; report.json and report.html recomputed from the entries",
        path.display(),
        report.from,
        report.to,
        report.entries_verified,
        report.edges_verified,
        report.checkpoints_verified,
        report.consistency_proofs_verified,
        report.blobs_verified,
        report.partitions
    ));
    Ok(summary)
}

/// The key argument is the verifier key itself, or else a file holding it.
fn load_key(argument: &str) -> Result<NoteVerifier, Failure> {
    if let Ok(key) = argument.parse::<NoteVerifier>() {
        return Ok(key);
    }
    let path = Path::new(argument);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|error| Failure::Usage(format!("cannot read key file {argument}: {error}")))?;
        return text
            .trim()
            .parse()
            .map_err(|error| Failure::Usage(format!("key file {argument}: {error}")));
    }
    match argument.parse::<NoteVerifier>() {
        Ok(key) => Ok(key),
        Err(error) => Err(Failure::Usage(format!(
            "--key is neither a verifier key nor a readable file: {error}"
        ))),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|error| Failure::Invalid {
        file: path.display().to_string(),
        reason: format!("cannot read: {error}"),
    })
}

fn invalid(path: &Path, error: impl ToString) -> Failure {
    Failure::Invalid {
        file: path.display().to_string(),
        reason: error.to_string(),
    }
}

fn audit(key: &NoteVerifier, dir: &Path, quiet: bool) -> Result<Value, Failure> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if !quiet
            && total > 0
            && (last_report.elapsed() >= Duration::from_secs(1) || done == total)
            && started.elapsed() >= Duration::from_secs(1)
        {
            last_report = Instant::now();
            eprintln!("audited {done}/{total} entries ({}%)", done * 100 / total);
        }
    };
    let report =
        audit_log_dir(dir, key, &mut progress).map_err(|AuditFailure { path, error }| {
            Failure::Invalid {
                file: dir.join(path).display().to_string(),
                reason: error.to_string(),
            }
        })?;
    for file in &report.unchecked_files {
        eprintln!(
            "warning: {} is not covered by any checkpoint; not checked",
            dir.join(file).display()
        );
    }
    let checkpoint = &report.checkpoint;
    Ok(json!({
        "command": "log",
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root_hash": to_base64(&checkpoint.root_hash),
        "kept_checkpoints": report.kept_checkpoints,
        "bundles_checked": report.bundles_checked,
        "tiles_checked": report.tiles_checked,
        "unchecked_files": report.unchecked_files,
        "seconds": started.elapsed().as_secs_f64(),
        "message": format!(
            "OK: {} at size {} (root {}): {} bundles, {} tiles and {} kept checkpoints verified",
            checkpoint.origin,
            checkpoint.size,
            to_base64(&checkpoint.root_hash),
            report.bundles_checked,
            report.tiles_checked,
            report.kept_checkpoints.len()
        ),
    }))
}

fn verify_proof(
    key: &NoteVerifier,
    entry_file: &Path,
    proof_file: &Path,
) -> Result<Value, Failure> {
    let entry = read_file(entry_file)?;
    let proof =
        TlogProof::parse(&read_file(proof_file)?).map_err(|error| invalid(proof_file, error))?;
    let checkpoint = proof
        .verify(&entry, key)
        .map_err(|error| invalid(proof_file, error))?;
    Ok(json!({
        "command": "proof",
        "origin": checkpoint.origin,
        "index": proof.index,
        "size": checkpoint.size,
        "root_hash": to_base64(&checkpoint.root_hash),
        "leaf_hash": to_base64(&leaf_hash(&entry)),
        "message": format!(
            "OK: entry {} is at index {} of {} at size {}",
            entry_file.display(),
            proof.index,
            checkpoint.origin,
            checkpoint.size
        ),
    }))
}

fn read_checkpoint(key: &NoteVerifier, path: &Path) -> Result<Checkpoint, Failure> {
    let text = SignedNote::open(&read_file(path)?, key).map_err(|error| invalid(path, error))?;
    Checkpoint::parse(&text).map_err(|error| invalid(path, error))
}

fn verify_consistency_files(
    key: &NoteVerifier,
    old_path: &Path,
    new_path: &Path,
    proof_path: &Path,
) -> Result<Value, Failure> {
    let old = read_checkpoint(key, old_path)?;
    let new = read_checkpoint(key, new_path)?;
    if old.origin != new.origin {
        return Err(invalid(
            new_path,
            format!(
                "origin {:?} differs from the old checkpoint's {:?}",
                new.origin, old.origin
            ),
        ));
    }
    let proof = parse_consistency_proof(&read_file(proof_path)?)
        .map_err(|error| invalid(proof_path, error))?;
    if old.size == 0 && new.size > 0 {
        // The empty tree is a prefix of every tree; only its root can be wrong.
        if old.root_hash != EMPTY_ROOT {
            return Err(invalid(
                old_path,
                "a checkpoint of size 0 must have the empty root",
            ));
        }
        if !proof.is_empty() {
            return Err(invalid(proof_path, "a proof from size 0 must be empty"));
        }
    } else {
        verify_consistency(old.size, new.size, &proof, &old.root_hash, &new.root_hash)
            .map_err(|error| invalid(proof_path, error))?;
    }
    Ok(json!({
        "command": "consistency",
        "origin": new.origin,
        "old_size": old.size,
        "new_size": new.size,
        "message": format!(
            "OK: {} at size {} is a prefix of size {}",
            new.origin, old.size, new.size
        ),
    }))
}
