//! `callproof-mask`: a masking dry run. Reads documents from stdin, one per line, and writes
//! one JSON line per input line on stdout, `{"masked": …, "findings": […]}`, using the
//! `[masking]` section of a deployment TOML file. A line that is not JSON is masked as text
//! (`masked` is then a string); a line that cannot be masked at all (not UTF-8, too long, too
//! deep) gets `{"error": …}` instead, so output line N always answers input line N.
//! A findings summary goes to stderr.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use callproof_masking::{FieldRules, Finding, Masker, MaskingConfig, MaskingError};
use clap::Parser;

/// Masking dry run over JSON lines read from stdin: one `{"masked": …, "findings": […]}` line
/// out per line in.
#[derive(Parser)]
#[command(name = "callproof-mask", version)]
struct Args {
    /// Deployment TOML file; only its `[masking]` section is read. Defaults apply without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Policy field rule (JSON pointer such as `/args/password`, or a bare key name); repeatable.
    #[arg(long = "field", value_name = "RULE")]
    fields: Vec<String>,
    /// Treat each line as free text, even when it parses as JSON.
    #[arg(long)]
    text: bool,
}

/// Lines longer than this are rejected rather than buffered without bound.
const MAX_LINE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot read config {path}: {source}")]
    ReadConfig { path: PathBuf, source: io::Error },
    #[error("invalid config {path}: {reason}")]
    ParseConfig { path: PathBuf, reason: String },
    #[error("invalid config {path}: {source}")]
    Masking { path: PathBuf, source: MaskingError },
    #[error("invalid --field: {0}")]
    Field(MaskingError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// One output line, fields in the documented order (a `json!` map would sort them).
#[derive(serde::Serialize)]
struct MaskedLine<'a> {
    masked: &'a serde_json::Value,
    findings: &'a [Finding],
}

/// The deployment file: other top-level sections belong to other components.
#[derive(serde::Deserialize)]
struct Deployment {
    #[serde(default)]
    masking: MaskingConfig,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("callproof-mask: {error}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether every line was masked.
fn run(args: Args) -> Result<bool, CliError> {
    let config = match &args.config {
        Some(path) => load_config(path)?,
        None => MaskingConfig::default(),
    };
    let masker = Masker::new(&config).map_err(|source| CliError::Masking {
        path: args.config.clone().unwrap_or_default(),
        source,
    })?;
    let rules = FieldRules::parse(&args.fields).map_err(CliError::Field)?;

    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = BufWriter::new(io::stdout().lock());
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let (mut n_lines, mut n_rejected) = (0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n_read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n_read == 0 {
            break;
        }
        n_lines += 1;
        let outcome = if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            skip_rest_of_line(&mut input)?;
            Err(format!("line is longer than {MAX_LINE_BYTES} bytes"))
        } else {
            let content = line.strip_suffix(b"\n").unwrap_or(&line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            mask_line(&masker, &rules, content, args.text)
        };
        // A rejected line is reported, never echoed: it may hold exactly what we mask.
        let out_line = match outcome {
            Ok((masked, findings)) => {
                for finding in &findings {
                    *totals.entry(finding.detector.clone()).or_default() +=
                        u64::from(finding.count);
                }
                serde_json::to_string(&MaskedLine {
                    masked: &masked,
                    findings: &findings,
                })
            }
            Err(reason) => {
                eprintln!("callproof-mask: line {n_lines}: rejected: {reason}");
                n_rejected += 1;
                serde_json::to_string(&serde_json::json!({ "error": reason }))
            }
        };
        // Serializing a `Value` and findings cannot fail (string keys, no I/O).
        writeln!(output, "{}", out_line.map_err(io::Error::other)?)?;
    }
    output.flush()?;

    let summary = if totals.is_empty() {
        "none".to_owned()
    } else {
        totals
            .iter()
            .map(|(detector, count)| format!("{detector}={count}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!("callproof-mask: {n_lines} lines, {n_rejected} rejected; findings: {summary}");
    Ok(n_rejected == 0)
}

fn load_config(path: &Path) -> Result<MaskingConfig, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadConfig {
        path: path.to_owned(),
        source,
    })?;
    // The error's message and line only: its default rendering quotes the offending line,
    // and on the `hmac_key` line not even serde's message ("invalid type: integer `...`").
    let deployment: Deployment = toml::from_str(&text).map_err(|error| {
        let start = error.span().map_or(0, |span| span.start.min(text.len()));
        let line = text[..start].lines().count().max(1);
        let on_secret_line = text
            .lines()
            .nth(line - 1)
            .is_some_and(|l| l.contains("hmac_key"));
        let message = if on_secret_line {
            "`masking.hmac_key` must be a string"
        } else {
            error.message()
        };
        CliError::ParseConfig {
            path: path.to_owned(),
            reason: format!("line {line}: {message}"),
        }
    })?;
    let mut config = deployment.masking;
    if let Some(key) = &config.hmac_key {
        config.hmac_key = Some(expand_env(key).map_err(|reason| CliError::ParseConfig {
            path: path.to_owned(),
            reason,
        })?);
    }
    Ok(config)
}

/// The service's config crate expands `${VAR}`; do the same for `hmac_key` so a dry run can
/// use the deployment file unchanged.
fn expand_env(value: &str) -> Result<String, String> {
    match value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
    {
        Some(name) => std::env::var(name)
            .map_err(|_| format!("`masking.hmac_key` refers to `{name}`, which is not set")),
        None => Ok(value.to_owned()),
    }
}

/// The masked document (or masked text, as a JSON string) and its findings; `Err` with a
/// reason that never quotes the input.
fn mask_line(
    masker: &Masker,
    rules: &FieldRules,
    line: &[u8],
    text_mode: bool,
) -> Result<(serde_json::Value, Vec<Finding>), String> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "input is not valid UTF-8 (first invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    if !text_mode && let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(text) {
        let findings = masker
            .mask_json(&mut doc, rules, true)
            .map_err(|e| e.to_string())?;
        return Ok((doc, findings));
    }
    // Not JSON (or `--text`): the detectors still run over it, as over any free text.
    let (masked, findings) = masker.mask_text(text);
    Ok((serde_json::Value::String(masked.into_owned()), findings))
}

fn skip_rest_of_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buffer.len();
                input.consume(n);
            }
        }
    }
}
